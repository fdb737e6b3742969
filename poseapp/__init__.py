"""PoseApp: real-time multi-person pose estimation with efficient vision transformers."""
