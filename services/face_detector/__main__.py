"""`python -m services.face_detector`: run the face_detector worker."""

from services.face_detector.stage import STAGE
from shared.worker import run_worker

if __name__ == "__main__":
    run_worker(STAGE)
