"""Segment sources: where analysis segments come from (static, DQSegDB, the segments topic).

Every source answers ``query(start, end) -> segmentlist`` with the *active*
segments, coalesced and clipped to ``[start, end)``.
"""

from idq_common.streaming.segments.base import AllTime, SegmentSource, StaticSegments, clip
from idq_common.streaming.segments.dqsegdb import DQSegDBSegments
from idq_common.streaming.segments.topic import TopicSegments

__all__ = [
    "AllTime",
    "DQSegDBSegments",
    "SegmentSource",
    "StaticSegments",
    "TopicSegments",
    "clip",
]
