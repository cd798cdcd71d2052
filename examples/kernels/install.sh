#!/usr/bin/env sh
# The real kernels for examples/kernels/, pinned, from the package registry only (torch 2.13.0
# CPU must be installed first): triton (its interpreter runs the kernels on a CPU), fla-core
# (pure Python + Triton), and mamba_ssm's source distribution, of which only the Triton files
# under mamba_ssm/ops/triton/ are used (its CUDA extension is never built).  The sdist is
# extracted into $SSMREF_KERNELS_CACHE (default ~/.cache/ssmref-kernels), where
# examples/kernels/harness.py looks for it.
set -eu
MAMBA=2.3.2.post1
CACHE="${SSMREF_KERNELS_CACHE:-$HOME/.cache/ssmref-kernels}"
pip install triton==3.9.0 fla-core==0.6.0
if [ ! -f "$CACHE/mamba_ssm-$MAMBA/mamba_ssm/ops/triton/ssd_combined.py" ]; then
    mkdir -p "$CACHE"
    MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE pip download "mamba-ssm==$MAMBA" \
        --no-deps --no-binary :all: --no-build-isolation -d "$CACHE"
    tar -xzf "$CACHE/mamba_ssm-$MAMBA.tar.gz" -C "$CACHE"
fi
python -c "import torch, triton, fla; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "kernels ready: triton $(python -c 'import triton; print(triton.__version__)'), fla-core 0.6.0, mamba_ssm $MAMBA in $CACHE"
