# Source on the GPU machine (device tool): installs carried wheels and this checkout, no network.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, esm, Bio, virnucpro; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
