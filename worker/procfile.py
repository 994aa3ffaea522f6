"""Print the Procfile of the queued set-up: ``python -m worker.procfile > Procfile``.

One line per process: the API, the relay, one worker per partition
(IDENTITY_PARTITIONS), Flower. ``bin/run`` writes it and runs it with honcho.
"""

from __future__ import annotations

import shlex
import sys

from identity.settings import Settings


def procfile(settings: Settings, python: str = sys.executable) -> str:
    py = shlex.quote(python)
    lines = [
        f"api: {py} -m gunicorn -c gunicorn.conf.py 'api:create_app()'",
        f"relay: {py} -m worker.relay",
        *(
            f"worker{p}: {py} -m worker.partition {p}"
            for p in range(settings.identity_partitions)
        ),
        f"flower: {py} -m celery -A worker flower --conf=flowerconfig.py",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(procfile(Settings.from_env()))
