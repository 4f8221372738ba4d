"""dpustack: control plane for DPU-equipped clouds."""
