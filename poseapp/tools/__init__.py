"""Commands around the runtime, each behind a ``main.py`` sub-command (``cli``): ``bench`` (milliseconds and
GFLOPs per knob value, end-to-end FPS of the video job), ``onnx_export`` (a checkpoint as an ONNX graph,
checked against its source) and ``batch`` (many videos on Ray, each as ``main.py --video`` does it).

Tools import the runtime, ``io`` and the base; only the command line (``cli``) imports them. Nothing is
imported here.
"""
