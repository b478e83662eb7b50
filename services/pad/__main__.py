"""`python -m services.pad`: the pad worker (model preflight included)."""

from services.pad.stage import STAGE
from shared.worker import run_worker

if __name__ == "__main__":
    run_worker(STAGE)
