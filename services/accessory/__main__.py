"""`python -m services.accessory`: the accessory worker (model preflight included)."""

from services.accessory.stage import STAGE
from shared.worker import run_worker

if __name__ == "__main__":
    run_worker(STAGE)
