"""Training and accuracy: ``train``, ``evaluate`` (PCK and COCO keypoint AP), ``calibrate`` (EMGPose's
default eta), ``teachers`` (MoveNet, YOLO11n-pose), ``label`` (pseudo-labels from them), ``corpus`` (building
a training corpus) and ``losses``.

The engine builds on the runtime (the same crops, top-down step and decoding as inference), on ``data`` and
on ``models``; nothing in ``runtime``, ``io`` or ``app/`` imports from here. Nothing is imported here.
"""
