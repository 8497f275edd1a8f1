"""PowerShell helpers: the ``-EncodedCommand`` command line, quoting, and the communicator's own guest scripts.

Each built-in script starts with a marker comment (``# aib:<name>``) and sets its parameters in plain
``$name = '…'`` lines, so logs (and the WinRM test server) can tell them apart.
"""

from __future__ import annotations

import base64
import re

POWERSHELL = "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "
MAX_COMMAND_LINE = 8191
"""cmd.exe's command line limit, which a WinRM ``cmd`` shell command obeys."""

MARK_BOOT_ID = "# aib:boot-id"
MARK_UPLOAD_PART = "# aib:upload-part"
MARK_UPLOAD_FINISH = "# aib:upload-finish"
MARK_NAIVE_DECODE = "# aib:naive-decode"
MARK_DOWNLOAD = "# aib:download"

_WINDOWS_ABS = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\[^\\/]+[\\/][^\\/]+)")


def encode_command(script: str) -> str:
    """The full ``powershell … -EncodedCommand`` line running ``script`` (UTF-16LE base64, as PowerShell wants)."""
    return POWERSHELL + base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def decode_command(command_line: str) -> str | None:
    """The script of a ``-EncodedCommand`` line, or None (used by tests and the test server)."""
    match = re.search(r"-(?:EncodedCommand|enc|e|ec)\s+([A-Za-z0-9+/=]+)", command_line, re.IGNORECASE)
    if not match:
        return None
    return base64.b64decode(match.group(1)).decode("utf-16-le")


def fits(script: str) -> bool:
    """Whether ``script`` fits a single command line once encoded."""
    return len(encode_command(script)) <= MAX_COMMAND_LINE


def quote(value: str) -> str:
    """A PowerShell single-quoted literal."""
    return "'" + value.replace("'", "''") + "'"


def check_remote_path(path: str) -> str:
    """Accept only absolute Windows paths without ``..`` segments or control characters."""
    if not _WINDOWS_ABS.match(path):
        raise ValueError(f"remote path must be absolute (C:\\… or \\\\server\\share\\…): {path!r}")
    if any(part == ".." for part in re.split(r"[\\/]", path)):
        raise ValueError(f"remote path must not contain '..': {path!r}")
    if any(ord(c) < 32 for c in path) or '"' in path:
        raise ValueError(f"remote path contains forbidden characters: {path!r}")
    return path


def boot_id_script() -> str:
    return f"{MARK_BOOT_ID}\n(Get-CimInstance Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')\n"


def upload_part_script(path: str) -> str:
    """Reads base64 lines from stdin and writes their bytes to ``path`` (created or truncated)."""
    return (
        f"{MARK_UPLOAD_PART}\n$ErrorActionPreference = 'Stop'\n$path = {quote(path)}\n"
        "$out = [IO.File]::Open($path, 'Create', 'Write')\n"
        "$in = New-Object IO.StreamReader([Console]::OpenStandardInput())\n"
        "try {\n"
        "  while ($null -ne ($line = $in.ReadLine())) {\n"
        "    if ($line) { $b = [Convert]::FromBase64String($line); $out.Write($b, 0, $b.Length) }\n"
        "  }\n"
        "} finally { $out.Close() }\n"
    )


def upload_finish_script(dest: str, parts: list[str], sha256: str) -> str:
    """Concatenates ``parts`` into ``dest`` through a temporary file, only when the sha256 matches."""
    part_list = ", ".join(quote(p) for p in parts)
    return (
        f"{MARK_UPLOAD_FINISH}\n$ErrorActionPreference = 'Stop'\n$dest = {quote(dest)}\n"
        f"$parts = @({part_list})\n$sha256 = {quote(sha256)}\n"
        '$tmp = "$dest.aib-tmp"\n'
        "$out = [IO.File]::Open($tmp, 'Create', 'Write')\n"
        "try { foreach ($p in $parts) { $in = [IO.File]::OpenRead($p); $in.CopyTo($out); $in.Close() } }"
        " finally { $out.Close() }\n"
        "foreach ($p in $parts) { Remove-Item -LiteralPath $p -Force }\n"
        "$h = (Get-FileHash -LiteralPath $tmp -Algorithm SHA256).Hash.ToLower()\n"
        "if ($h -ne $sha256) { Remove-Item -LiteralPath $tmp -Force;"
        ' [Console]::Error.WriteLine("sha256 mismatch: got $h"); exit 3 }\n'
        "Move-Item -LiteralPath $tmp -Destination $dest -Force\n"
        'Write-Output "sha256 $h"\n'
    )


def naive_decode_script(tmp: str, dest: str) -> str:
    """Decodes the base64 text file ``tmp`` (built with one ``echo`` per chunk) into ``dest``."""
    return (
        f"{MARK_NAIVE_DECODE}\n$ErrorActionPreference = 'Stop'\n$tmp = {quote(tmp)}\n$dest = {quote(dest)}\n"
        "$text = [IO.File]::ReadAllText($tmp) -replace '\\s', ''\n"
        "[IO.File]::WriteAllBytes($dest, [Convert]::FromBase64String($text))\n"
        "Remove-Item -LiteralPath $tmp -Force\n"
        "(Get-FileHash -LiteralPath $dest -Algorithm SHA256).Hash.ToLower()\n"
    )


def download_script(path: str) -> str:
    """Prints the file as base64 lines."""
    return (
        f"{MARK_DOWNLOAD}\n$ErrorActionPreference = 'Stop'\n$path = {quote(path)}\n"
        "[Convert]::ToBase64String([IO.File]::ReadAllBytes($path), 'InsertLineBreaks')\n"
    )


def param(script: str, name: str) -> str | None:
    """The value of a ``$name = '…'`` line of one of these scripts (for the test server)."""
    match = re.search(rf"^\${name} = '((?:[^']|'')*)'$", script, re.MULTILINE)
    return match.group(1).replace("''", "'") if match else None


def param_list(script: str, name: str) -> list[str]:
    match = re.search(rf"^\${name} = @\((.*)\)$", script, re.MULTILINE)
    if not match:
        return []
    return [v.replace("''", "'") for v in re.findall(r"'((?:[^']|'')*)'", match.group(1))]
