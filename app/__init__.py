"""PoseApp's desktop viewer (PyQt6 + pyqtgraph): composes the ``poseapp`` library, which never imports Qt."""
