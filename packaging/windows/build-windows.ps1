# Builds dist\Retake-<version>-windows-x86_64.exe from the committed tree (HEAD). UNTESTED: needs Windows
# with git, Python 3.11+ and Inno Setup 6 (iscc on PATH); packaging/README.md lists what to check.
$ErrorActionPreference = "Stop"
$root = Resolve-Path "$PSScriptRoot\..\.."
Set-Location $root
$version = python -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])"
$uvVersion = python -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['tool']['uv']['required-version'].lstrip('='))"
$work = Join-Path $env:TEMP "retake-build-$(Get-Random)"
New-Item -ItemType Directory -Path $work | Out-Null
try {
    git archive --format zip -o "$work\src.zip" HEAD
    Expand-Archive "$work\src.zip" "$work\src"
    # uv for Windows, from its wheel on PyPI
    python -m pip download --no-deps --only-binary :all: --platform win_amd64 --python-version 3.11 --dest "$work\uv-wheel" "uv==$uvVersion"
    $uvWheel = Get-Item "$work\uv-wheel\uv-*.whl"
    Copy-Item $uvWheel "$work\uv.zip"
    Expand-Archive "$work\uv.zip" "$work\uv-x"
    Copy-Item (Get-Item "$work\uv-x\uv-*.data\scripts\uv.exe") "$work\uv.exe"
    & "$work\uv.exe" build --wheel --out-dir "$work\wheel" "$work\src"
    $env:PYTHONPATH = "$work\src\packaging"
    python -m retake_install assemble --root "$work\src" --out "$work\payload" --wheel (Get-Item "$work\wheel\retake-*.whl") --uv "$work\uv.exe"
    Copy-Item "packaging\windows\bootstrap.cmd" "$work\payload\bootstrap.cmd"
    & "$work\uv.exe" run --no-project --with pillow python -c "from PIL import Image; Image.open(r'packaging\icons\retake.png').save(r'$work\retake.ico', sizes=[(16, 16), (32, 32), (48, 48), (256, 256)])"
    iscc "/DAppVersion=$version" "/DPayload=$work\payload" "/DIcon=$work\retake.ico" "packaging\windows\retake.iss"
} finally {
    Remove-Item -Recurse -Force $work
}
