"""Write the secrets docker-compose.yml reads: a throwaway CA, certificates, passwords, ACLs.

    .venv/bin/python deploy/make_secrets.py          # into deploy/secrets/ (git-ignored)

For trying the compose file: the CA is made here (trustme, from the dev extras)
and its key is thrown away. In production use your own PKI and secret store
and put files of the same names in ``deploy/secrets/``:

| file | for | what |
|---|---|---|
| ``ca.pem`` | everyone | the CA that signed the Kafka and Redis certificates |
| ``kafka_keystore.pem`` | kafka | key and certificate chain for host ``kafka`` (PEM keystore) |
| ``kafka_server_jaas.conf`` | kafka | SASL PLAIN users: ``broker`` (inter-broker), ``silvertine`` |
| ``kafka_client.properties`` | kafka healthcheck | a SASL_SSL client config for Kafka's own tools |
| ``kafka_password`` | worker | the ``silvertine`` SASL password |
| ``redis_cert.pem``, ``redis_key.pem`` | redis | certificate and key for host ``redis`` |
| ``redis_users.acl`` | redis | ACL file: ``default`` off, worker, reader, healthcheck (hashed passwords) |
| ``redis_worker_password`` | worker | the ``silvertine-worker`` password |
| ``redis_reader_password`` | operators | the read-only ``silvertine-reader`` password |
| ``redis_health_password`` | redis healthcheck | a user that may only PING |

The files are written readable by all (``0644``) because the containers run as
users of their own; keep the folder itself private.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from pathlib import Path

WORKER_RULES = ("on {password} resetkeys ~events:* ~log:* ~ids:* ~dlq ~dlq:* ~lease:* "
                "~handlers:* ~ops:actions ~processor:* ~sink:replicated resetchannels "
                "-@all +@read +@write +@scripting +@connection -@dangerous +info +time")
READER_RULES = "on {password} resetkeys ~* resetchannels -@all +@read +@connection -@dangerous"
HEALTH_RULES = "on {password} resetkeys resetchannels -@all +ping +@connection"
"""The README's ACL rules (a test checks they are the same), with the password's hash."""

KAFKA_USER = "silvertine"
OUT = Path(__file__).resolve().parent / "secrets"


def _hashed(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def write_secrets(out: Path) -> dict[str, Path]:
    """Write every secret file into ``out``; return them by name."""
    import trustme

    out.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="silvertine compose (throwaway)")
    kafka = ca.issue_cert("kafka", "localhost")
    redis = ca.issue_cert("redis", "localhost")
    passwords = {name: secrets.token_urlsafe(24)
                 for name in ("broker", "kafka", "worker", "reader", "health")}
    files: dict[str, bytes] = {
        "ca.pem": ca.cert_pem.bytes(),
        "kafka_keystore.pem": kafka.private_key_pem.bytes()
        + b"".join(pem.bytes() for pem in kafka.cert_chain_pems),
        "kafka_server_jaas.conf": (
            "KafkaServer {\n"
            "  org.apache.kafka.common.security.plain.PlainLoginModule required\n"
            f'  username="broker" password="{passwords["broker"]}"\n'
            f'  user_broker="{passwords["broker"]}"\n'
            f'  user_{KAFKA_USER}="{passwords["kafka"]}";\n'
            "};\n").encode(),
        "kafka_client.properties": (
            "security.protocol=SASL_SSL\n"
            "sasl.mechanism=PLAIN\n"
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="broker" password="{passwords["broker"]}";\n'
            "ssl.truststore.type=PEM\n"
            "ssl.truststore.location=/run/secrets/ca.pem\n").encode(),
        "kafka_password": f"{passwords['kafka']}\n".encode(),
        "redis_cert.pem": b"".join(pem.bytes() for pem in redis.cert_chain_pems),
        "redis_key.pem": redis.private_key_pem.bytes(),
        "redis_users.acl": "\n".join([
            "user default off",
            "user silvertine-worker " + WORKER_RULES.format(password=_hashed(passwords["worker"])),
            "user silvertine-reader " + READER_RULES.format(password=_hashed(passwords["reader"])),
            "user healthcheck " + HEALTH_RULES.format(password=_hashed(passwords["health"])),
            ""]).encode(),
        "redis_worker_password": f"{passwords['worker']}\n".encode(),
        "redis_reader_password": f"{passwords['reader']}\n".encode(),
        "redis_health_password": f"{passwords['health']}\n".encode(),
    }
    written = {}
    for name, content in files.items():
        path = out / name
        path.write_bytes(content)
        path.chmod(0o644)
        written[name] = path
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    for path in write_secrets(target).values():
        print(path)
