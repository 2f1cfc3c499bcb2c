"""MTurk ExternalQuestion XML (the HIT's question that frames our page).

``mturk create-hits`` (boto3) builds on this; see API.md.
"""

from __future__ import annotations

from urllib.parse import urlsplit
from xml.sax.saxutils import escape

EXTERNAL_QUESTION_NS = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd"
)


def external_question_xml(url: str, frame_height: int = 0) -> str:
    """The ExternalQuestion for ``url`` (must be https: MTurk refuses anything else).

    MTurk appends workerId, assignmentId, hitId and turkSubmitTo to the URL itself.
    ``frame_height`` 0 lets the iframe take the window's height.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"MTurk needs an https:// participant URL, got {url!r}")
    if not 0 <= int(frame_height) <= 10_000:
        raise ValueError("frame_height must be between 0 and 10000 pixels")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<ExternalQuestion xmlns="{EXTERNAL_QUESTION_NS}">\n'
        f"  <ExternalURL>{escape(url)}</ExternalURL>\n"
        f"  <FrameHeight>{int(frame_height)}</FrameHeight>\n"
        "</ExternalQuestion>\n"
    )
