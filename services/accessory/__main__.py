"""`python -m services.accessory`: run the accessory worker."""

from services.accessory.stage import STAGE
from shared.worker import run_worker

if __name__ == "__main__":
    run_worker(STAGE)
