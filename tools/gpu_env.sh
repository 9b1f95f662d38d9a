# Sourced by gpu_run.sh and gpu_check.sh. The offline device machine (../shared/GPU.md) has torch but not the rest:
# install the wheels carried in .whl/ into /tmp/site once, and put the checkout on the path.
if [ -d .whl ] && ! python3 -c "import monai, papermill" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
