"""The OTLP receiver lives with the demo, which draws its traces (authz/dev/otlp.py)."""

from authz.dev.otlp import OtlpHttpReceiver, OtlpReceiver, ReceivedSpan, attributes

__all__ = ["OtlpHttpReceiver", "OtlpReceiver", "ReceivedSpan", "attributes"]
