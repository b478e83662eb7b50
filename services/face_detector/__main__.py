"""`python -m services.face_detector`: the face_detector worker (model preflight included)."""

from services.face_detector.stage import STAGE
from shared.worker import run_worker

if __name__ == "__main__":
    run_worker(STAGE)
