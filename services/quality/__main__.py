"""`python -m services.quality`: check the model files, then run the worker."""

from services.preflight import preflight
from services.quality.stage import STAGE
from shared.worker import run_worker

if __name__ == "__main__":
    preflight(STAGE)
    run_worker(STAGE)
