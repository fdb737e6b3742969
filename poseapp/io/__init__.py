"""Files and streams: video sources, the capture thread and the H.264 writer (``video``), and pose results as
COCO-style JSON and CSV files (``keypoint_files``).

These modules import only the package's base (``results``, ``skeleton``); the runtime, the GUI and the
tools read and write through them. Nothing is imported here.
"""
