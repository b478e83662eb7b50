"""`python -m services.quality`: the quality worker (model preflight included)."""

from services.quality.stage import STAGE
from shared.worker import run_worker

if __name__ == "__main__":
    run_worker(STAGE)
