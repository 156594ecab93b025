@echo off
rem Windows' entry to retake_install, the installer logic Linux and macOS share (UNTESTED: see
rem packaging/README.md). Finds a Python 3.11+ with uv (or downloads one into the install folder),
rem then runs `python -m retake_install %*` from this payload: `install --yes --prefix DIR ...` from
rem the setup, `uninstall --yes --prefix DIR` from its uninstaller.
setlocal
set "HERE=%~dp0"
set "UV=%HERE%bin\uv.exe"
set "UV_CACHE_DIR=%HERE%.uv-cache"
set "UV_NO_CONFIG=1"
set "UV_SYSTEM_CERTS=1"
set "UV_PYTHON_INSTALL_DIR=%HERE%..\python"
set "PY="
set "UV_PYTHON_DOWNLOADS=never"
for /f "delims=" %%p in ('"%UV%" python find --no-project ">=3.11" 2^>nul') do set "PY=%%p"
set "UV_PYTHON_DOWNLOADS="
if not defined PY (
  echo No Python 3.11 or newer here: uv downloads one into %UV_PYTHON_INSTALL_DIR%.
  "%UV%" python install 3.12 || exit /b 1
  for /f "delims=" %%p in ('"%UV%" python find --no-project --managed-python ">=3.11"') do set "PY=%%p"
)
set "PYTHONPATH=%HERE%"
set "PYTHONDONTWRITEBYTECODE=1"
"%PY%" -m retake_install %*
exit /b %ERRORLEVEL%
