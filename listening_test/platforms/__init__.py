"""Recruitment platforms and study recruitment.

- ``identity``: who a visitor is (MTurk, Prolific or a plain link) and their completion hand-off;
- ``recruitment``: draft mode, launch, targets, closing a full study;
- ``mturk``: the ExternalQuestion XML; ``mturk_hits``: HITs through boto3 and the ``mturk`` commands.
"""
