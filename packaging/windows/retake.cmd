@echo off
rem Retake's launcher on Windows (UNTESTED): runs the version ..\current names; with no arguments the
rem window, without a console.
setlocal
set /p VERSION=<"%~dp0..\current"
set "VENV=%~dp0..\versions\%VERSION%\venv"
if not exist "%VENV%\Scripts\retake.exe" (
  echo Retake's program files are missing or broken: run the Retake setup again; your settings, models and projects are kept.
  exit /b 1
)
if "%~1"=="" (
  start "" "%VENV%\Scripts\retake-gui.exe"
  exit /b 0
)
"%VENV%\Scripts\retake.exe" %*
exit /b %ERRORLEVEL%
