"""`python -m services.identity`: the identity worker (model preflight included)."""

from services.identity.stage import STAGE
from shared.worker import run_worker

if __name__ == "__main__":
    run_worker(STAGE)
