# Source on the GPU machine (device tool): installs carried wheels and this checkout, no network.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1   # never NVLink multicast
# The device's Python has no bytecode caches for torch and cannot keep them (measured 2026-11-29 with
# py-spy: ~70% of import time was compiling .py sources, e.g. ~9.6 s of a worker's start-up for
# torch._inductor, in every process). A normal installation has them; give this one a place to keep them,
# filled by the first process that imports a module (models synth, then the warm-up run).
echo "bytecode: sys.dont_write_bytecode=$(python3 -c 'import sys; print(sys.dont_write_bytecode)')," \
     "torch dir writable=$(python3 -c 'import importlib.util, os; print(os.access(os.path.dirname(importlib.util.find_spec("torch").origin), os.W_OK))')," \
     "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pycache
python3 -c "import torch, esm, Bio, virnucpro; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
