; Retake's Windows setup (Inno Setup 6). UNTESTED: it cannot be built or run where Retake is developed;
; packaging/README.md lists what a person must check. Built by build-windows.ps1, which passes
; AppVersion, Payload (the folder `python -m retake_install assemble` made, with bootstrap.cmd) and Icon.
; The setup copies the payload, then runs the same installer logic as Linux (retake_install) to build
; the runtime from the lock; the Start-menu entry and the uninstaller are Inno Setup's.

#ifndef AppVersion
  #error Pass /DAppVersion=... (build-windows.ps1 does)
#endif

[Setup]
AppId={{6F2B7C51-8E0A-4C8F-9B7E-52D1A0C4E3B9}
AppName=Retake
AppVersion={#AppVersion}
AppPublisher=Retake
DefaultDirName={localappdata}\Programs\Retake
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=Retake-{#AppVersion}-windows-x86_64
SetupIconFile={#Icon}
UninstallDisplayIcon={app}\retake.ico
Compression=lzma2
SolidCompression=yes
WizardStyle=modern

[Tasks]
Name: desktopicon; Description: "Create a desktop shortcut"; Flags: unchecked

[Files]
Source: "{#Payload}\*"; DestDir: "{app}\installer"; Flags: recursesubdirs ignoreversion
Source: "retake.cmd"; DestDir: "{app}\bin"; Flags: ignoreversion
Source: "{#Icon}"; DestDir: "{app}"; DestName: "retake.ico"; Flags: ignoreversion

[Icons]
Name: "{autoprograms}\Retake"; Filename: "{app}\bin\retake.cmd"; IconFilename: "{app}\retake.ico"; Flags: runminimized
Name: "{autodesktop}\Retake"; Filename: "{app}\bin\retake.cmd"; IconFilename: "{app}\retake.ico"; Flags: runminimized; Tasks: desktopicon

[UninstallRun]
; the runtime, uv's cache and a downloaded Python: what retake_install's manifest and prefix hold
Filename: "{app}\installer\bootstrap.cmd"; Parameters: "uninstall --yes --prefix ""{app}"""; Flags: runhidden waituntilterminated; RunOnceId: "RetakeRuntime"

[Code]
{ The runtime is built after the files are copied; a failure shows the log and leaves the previous
  runtime (if any) in use, as retake_install guarantees. /BACKEND=auto|cuda|cpu on the command line. }
procedure CurStepChanged(CurStep: TSetupStep);
var
  ResultCode: Integer;
  Log: String;
begin
  if CurStep = ssPostInstall then
  begin
    Log := ExpandConstant('{app}\install.log');
    WizardForm.StatusLabel.Caption := 'Building Retake''s runtime (the first time downloads about 3 GB)...';
    if not Exec(ExpandConstant('{cmd}'),
                '/C ""' + ExpandConstant('{app}\installer\bootstrap.cmd') + '" install --yes --prefix "' +
                ExpandConstant('{app}') + '" --backend ' + ExpandConstant('{param:BACKEND|auto}') +
                ' > "' + Log + '" 2>&1"',
                '', SW_HIDE, ewWaitUntilTerminated, ResultCode) or (ResultCode <> 0) then
      MsgBox('Retake''s runtime could not be built (exit code ' + IntToStr(ResultCode) + '). ' +
             'Nothing of a previous version was changed. The log is ' + Log + '.', mbError, MB_OK);
  end;
end;
