"""The identity stage: a face template per image and the near/far same-person check."""
