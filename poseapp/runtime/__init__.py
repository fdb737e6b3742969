"""The runtime: a trained model posing the people of images and videos.

Person detection (``detect``), tracking (``track``), the one top-down step (``predictor``: crops ->
model -> heatmap decoding, built on ``transforms`` and ``inference``), smoothing, the latency budget
(``budget``, ``latency_cache``, ``precision``, ``flops``), drawing (``render``), the pipeline and its
builder (``pipeline``, ``build``), and the threaded video job (``video_job``).

Modules here import the package's base (``results``, ``geometry``, ``skeleton``, ``paths``, ``models``) and
``io``, never ``engine`` or ``tools``; the GUI (``app/``) and the Python API (``api``) build on this layer.
Nothing is imported here: ``import poseapp.runtime.render`` loads the renderer alone.
"""
