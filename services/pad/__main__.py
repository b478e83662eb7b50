"""`python -m services.pad`: check the model files, then run the worker."""

from services.pad.stage import STAGE
from services.preflight import preflight
from shared.worker import run_worker

if __name__ == "__main__":
    preflight(STAGE)
    run_worker(STAGE)
