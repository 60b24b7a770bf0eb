"""Dev-side toolchain: the safety classifier model, model resolution, and (next) bundle export
to ONNX Runtime Training and ExecuTorch. Needs torch; never imported on a phone."""
