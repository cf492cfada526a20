"""Worker fixtures (own broker, worker processes) and TLS servers for the tests in this folder."""

from tests.pipeline_support import fresh_kafka, pipeline_settings, workers  # noqa: F401
from tests.tls_support import pki, tls_admin, tls_kafka, tls_redis  # noqa: F401
