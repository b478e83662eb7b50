"""`python -m services.pad`: run the pad worker."""

from services.pad.stage import STAGE
from shared.worker import run_worker

if __name__ == "__main__":
    run_worker(STAGE)
