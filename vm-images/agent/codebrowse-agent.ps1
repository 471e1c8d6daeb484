<#
codebrowse guest agent (Windows). The counterpart of codebrowse-agent.sh with the same contract:
  GET  $Portal/agent/v1/manifest         204 while unclaimed (poll), 200 the manifest
  GET  $Portal/agent/v1/packages/<i>     a package's bytes (the manifest's "download")
  POST $Portal/agent/v1/report           {"package":i,"installed":b,"exitCode":n,"message":"..."}
  POST $Portal/agent/v1/done             {"installed":b,"message":"..."}
Runs at boot as SYSTEM (a scheduled task "At startup", or a service wrapper), Windows PowerShell 5.1
or later. Steps: hostname, address, local user (+ Administrators, Remote Desktop Users), ssh keys
when OpenSSH Server is installed, the VNC password of an in-guest VNC server (TightVNC), then the
packages by suffix: .msi (msiexec /i /qn /norestart), .exe (silent flags by installer type:
NSIS /S, Inno Setup /VERYSILENT, WiX/Burn and others /quiet), .zip (checked, then unpacked to
the user's profile), anything else left in the profile with a note. A session installScript
replaces the suffix rules: it runs once, as PowerShell, in the downloads folder.
NOT RUN IN CI: there is no PowerShell on the Debian test machines (see vm-images/README.md).
#>
[CmdletBinding()]
param()
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 2

$StateRoot = if ($env:CODEBROWSE_STATE_DIR) { $env:CODEBROWSE_STATE_DIR } else { Join-Path $env:ProgramData 'codebrowse-agent' }
$ConfigFile = if ($env:CODEBROWSE_CONFIG) { $env:CODEBROWSE_CONFIG } else { Join-Path $env:ProgramData 'codebrowse\agent.env' }
$LogFile = Join-Path $StateRoot 'agent.log'
$PollSeconds = if ($env:CODEBROWSE_POLL_SECONDS) { [int]$env:CODEBROWSE_POLL_SECONDS } else { 1 }
$MaxEntries = if ($env:CODEBROWSE_ARCHIVE_MAX_ENTRIES) { [int64]$env:CODEBROWSE_ARCHIVE_MAX_ENTRIES } else { 10000 }
$MaxBytes = if ($env:CODEBROWSE_ARCHIVE_MAX_BYTES) { [int64]$env:CODEBROWSE_ARCHIVE_MAX_BYTES } else { 1GB }
$MaxRatio = if ($env:CODEBROWSE_ARCHIVE_MAX_RATIO) { [int64]$env:CODEBROWSE_ARCHIVE_MAX_RATIO } else { 100 }
$InstallTimeout = if ($env:CODEBROWSE_INSTALL_TIMEOUT) { [int]$env:CODEBROWSE_INSTALL_TIMEOUT } else { 3600 }
$MessageBytes = 8192

New-Item -ItemType Directory -Force -Path $StateRoot | Out-Null
$Steps = New-Object System.Collections.Generic.List[string]

function Write-Log([string]$Text) {
  $line = '{0} codebrowse-agent: {1}' -f (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ'), $Text
  Write-Output $line
  Add-Content -Path $LogFile -Value $line -Encoding UTF8
}

function Add-Step([string]$Name, [string]$Text) {
  Write-Log "${Name}: $Text"
  $Steps.Add("${Name}: $Text")
}

# --- configuration ---------------------------------------------------------------------------

function Get-EnvFileValue([string]$File, [string]$Key) {
  if (-not (Test-Path $File)) { return $null }
  $value = $null
  foreach ($line in Get-Content -Path $File) {
    if ($line -match "^\s*(export\s+)?$Key=(.*)$") { $value = $Matches[2].Trim().Trim('"').Trim("'") }
  }
  return $value
}

# The NoCloud disk (label cidata) KubeVirt attaches: its user-data writes agent.env; without
# cloudbase-init, read the same lines from it here.
function Read-NoCloud {
  $volume = Get-Volume -ErrorAction SilentlyContinue | Where-Object { $_.FileSystemLabel -in @('cidata', 'CIDATA') -and $_.DriveLetter } | Select-Object -First 1
  if (-not $volume) { return }
  foreach ($name in @('user-data', 'userdata')) {
    $file = '{0}:\{1}' -f $volume.DriveLetter, $name
    if (Test-Path $file) {
      New-Item -ItemType Directory -Force -Path (Split-Path $ConfigFile) | Out-Null
      Get-Content $file | Where-Object { $_ -match '^\s*CODEBROWSE_[A-Z_]*=' } | ForEach-Object { $_.Trim() } | Set-Content -Path $ConfigFile -Encoding ASCII
      Write-Log "read the agent settings from the NoCloud disk into $ConfigFile"
      return
    }
  }
}

function Get-Config {
  $portal = @($env:CODEBROWSE_PORTAL_URL, $env:CODEBROWSE_PORTAL) | Where-Object { $_ } | Select-Object -First 1
  $token = @($env:CODEBROWSE_AGENT_TOKEN, $env:CODEBROWSE_TOKEN) | Where-Object { $_ } | Select-Object -First 1
  if ((-not $portal -or -not $token) -and -not (Test-Path $ConfigFile)) { Read-NoCloud }
  if (-not $portal) { $portal = @((Get-EnvFileValue $ConfigFile 'CODEBROWSE_PORTAL_URL'), (Get-EnvFileValue $ConfigFile 'CODEBROWSE_PORTAL')) | Where-Object { $_ } | Select-Object -First 1 }
  if (-not $token) { $token = @((Get-EnvFileValue $ConfigFile 'CODEBROWSE_AGENT_TOKEN'), (Get-EnvFileValue $ConfigFile 'CODEBROWSE_TOKEN')) | Where-Object { $_ } | Select-Object -First 1 }
  if ($portal -and $token) { return @{ Portal = $portal.TrimEnd('/'); Token = $token } }
  return $null
}

# --- HTTP --------------------------------------------------------------------------------------

# Returns @{ Status = <int or 0 when no answer>; Body = <string>; Error = <string> }.
function Invoke-Portal([string]$Method, [string]$Url, $Body = $null, [string]$OutFile = $null, [switch]$NoAuth) {
  $headers = @{}
  if (-not $NoAuth) { $headers['Authorization'] = "Bearer $($Config.Token)" }
  $params = @{ Uri = $Url; Method = $Method; Headers = $headers; UseBasicParsing = $true; TimeoutSec = 3600 }
  if ($null -ne $Body) {
    $params['Body'] = [System.Text.Encoding]::UTF8.GetBytes(($Body | ConvertTo-Json -Depth 5 -Compress))
    $params['ContentType'] = 'application/json'
  }
  if ($OutFile) { $params['OutFile'] = $OutFile; $params['PassThru'] = $true }
  try {
    $response = Invoke-WebRequest @params
    $text = ''
    if (-not $OutFile -and $response.Content) {
      $text = if ($response.Content -is [byte[]]) { [System.Text.Encoding]::UTF8.GetString($response.Content) } else { [string]$response.Content }
    }
    return @{ Status = [int]$response.StatusCode; Body = $text; Error = '' }
  } catch {
    $resp = $null
    if ($_.Exception.PSObject.Properties['Response']) { $resp = $_.Exception.Response }
    if ($resp) { return @{ Status = [int]$resp.StatusCode; Body = ''; Error = $_.Exception.Message } }
    return @{ Status = 0; Body = ''; Error = $_.Exception.Message }
  }
}

function Send-Report([string]$Path, $Body) {
  $wait = 1
  for ($attempt = 1; $attempt -le 10; $attempt++) {
    $r = Invoke-Portal -Method POST -Url "$($Config.Portal)$Path" -Body $Body
    if ($r.Status -ge 200 -and $r.Status -lt 300) { return $true }
    if ($r.Status -ne 0 -and $r.Status -ne 409 -and $r.Status -ne 429 -and $r.Status -lt 500) {
      Write-Log "POST $Path refused: HTTP $($r.Status) $($r.Error)"
      return $false
    }
    Write-Log "POST ${Path}: HTTP $($r.Status) $($r.Error); again in $wait s"
    Start-Sleep -Seconds $wait
    $wait = [Math]::Min($wait * 2, 30)
  }
  return $false
}

# --- setup steps -------------------------------------------------------------------------------

function Set-SessionHostname($Manifest) {
  if (-not $Manifest.PSObject.Properties['hostname'] -or -not $Manifest.hostname) { Add-Step 'hostname' 'none in the manifest'; return $true }
  $short = ($Manifest.hostname -split '\.')[0]
  if ($short.Length -gt 15) { $short = $short.Substring(0, 15) } # NetBIOS names
  if ($env:COMPUTERNAME -ieq $short) { Add-Step 'hostname' "$short (already)"; return $true }
  try {
    Rename-Computer -NewName $short -Force -WarningAction SilentlyContinue
    Add-Step 'hostname' "$short (takes effect at the next restart; DNS uses $($Manifest.hostname))"
    return $true
  } catch { Add-Step 'hostname' "Rename-Computer failed: $($_.Exception.Message)"; return $false }
}

# The session's address on the pool network's adapter (manifest network.mac), with the pool range's
# prefix, its gateway (as a route of that adapter only, behind the pod network's) and DNS servers.
function Set-SessionAddress($Manifest) {
  $net = if ($Manifest.PSObject.Properties['network']) { $Manifest.network } else { $null }
  if (-not $net -or -not $net.address) { Add-Step 'address' 'none in the manifest'; return $true }
  $address = ($net.address -split '/')[0]
  $prefix = $net.prefixLength
  if (-not $prefix) { Add-Step 'address' "the manifest gives $address no network.prefixLength"; return $false }
  $mac = ($net.mac -replace ':', '-').ToUpperInvariant()
  if ($mac -notmatch '^[0-9A-F]{2}(-[0-9A-F]{2}){5}$') { Add-Step 'address' "the manifest names no valid network.mac"; return $false }
  $adapter = Get-NetAdapter | Where-Object { $_.MacAddress -eq $mac } | Select-Object -First 1
  if (-not $adapter) { Add-Step 'address' "no adapter with MAC $($net.mac) (the pool network's)"; return $false }
  if (Get-NetIPAddress -InterfaceIndex $adapter.ifIndex -IPAddress $address -ErrorAction SilentlyContinue) {
    Add-Step 'address' "$address already on $($adapter.Name)"; return $true
  }
  try {
    Set-NetIPInterface -InterfaceIndex $adapter.ifIndex -Dhcp Disabled -ErrorAction SilentlyContinue
    $params = @{ InterfaceIndex = $adapter.ifIndex; IPAddress = $address; PrefixLength = $prefix }
    New-NetIPAddress @params | Out-Null
    $how = "$address/$prefix on $($adapter.Name)"
    if ($net.PSObject.Properties['gateway'] -and $net.gateway) {
      # A higher metric than the pod network's: the portal stays reachable the way it was.
      $dest = if ($address -match ':') { '::/0' } else { '0.0.0.0/0' }
      New-NetRoute -InterfaceIndex $adapter.ifIndex -DestinationPrefix $dest -NextHop $net.gateway -RouteMetric 500 | Out-Null
      $how += "; gateway $($net.gateway)"
    }
    if ($net.PSObject.Properties['dns'] -and $net.dns) {
      Set-DnsClientServerAddress -InterfaceIndex $adapter.ifIndex -ServerAddresses $net.dns
      $how += "; DNS $($net.dns -join ' ')"
    }
    if ($net.PSObject.Properties['broadcast'] -and $net.broadcast) {
      # The paper's one broadcast ping to the subnet; Windows sends the gratuitous ARP itself (DAD).
      & ping.exe -n 1 -w 1000 -S $address $net.broadcast | Out-Null
      $how += "; broadcast ping to $($net.broadcast)"
    }
    Add-Step 'address' "$how; Windows announces the address itself"
    return $true
  } catch { Add-Step 'address' "setting $address failed: $($_.Exception.Message)"; return $false }
}

function New-SessionUser($Manifest) {
  $user = $Manifest.user
  if (-not $user -or $user -notmatch '^[a-z_][a-z0-9_-]{0,19}$') { Add-Step 'user' "refused the user name '$user'"; return $null }
  $marker = Join-Path $StateRoot "user-$user.done"
  if ((Test-Path $marker) -and (Get-LocalUser -Name $user -ErrorAction SilentlyContinue)) { Add-Step 'user' "$user (made before)"; return $user }
  $password = if ($Manifest.PSObject.Properties['password']) { $Manifest.password } else { $null }
  if (-not $password) {
    # Key-only users still need a password Windows accepts: a long random one nobody knows.
    $password = [Convert]::ToBase64String((1..24 | ForEach-Object { [byte](Get-Random -Maximum 256) })) + 'aA1!'
  }
  $secure = ConvertTo-SecureString $password -AsPlainText -Force
  try {
    if (Get-LocalUser -Name $user -ErrorAction SilentlyContinue) {
      Set-LocalUser -Name $user -Password $secure -PasswordNeverExpires $true
      $how = 'exists already, password set'
    } else {
      New-LocalUser -Name $user -Password $secure -PasswordNeverExpires -FullName 'codebrowse session user' | Out-Null
      $how = 'created'
    }
    foreach ($group in @('Administrators', 'Remote Desktop Users')) {
      Add-LocalGroupMember -Group $group -Member $user -ErrorAction SilentlyContinue
    }
  } catch { Add-Step 'user' "creating $user failed: $($_.Exception.Message)"; return $null }
  $keys = @()
  if ($Manifest.PSObject.Properties['sshKeys'] -and $Manifest.sshKeys) { $keys = @($Manifest.sshKeys | ForEach-Object { ($_ -replace "[`r`n]", '') }) }
  if ($keys.Count -gt 0) {
    # Administrators' keys live in one file that only SYSTEM and Administrators may read.
    $file = Join-Path $env:ProgramData 'ssh\administrators_authorized_keys'
    New-Item -ItemType Directory -Force -Path (Split-Path $file) | Out-Null
    Set-Content -Path $file -Value $keys -Encoding ASCII
    icacls.exe $file /inheritance:r /grant 'SYSTEM:F' /grant '*S-1-5-32-544:F' | Out-Null
    $how = "$how, $($keys.Count) ssh key(s)"
  }
  New-Item -ItemType File -Force -Path $marker | Out-Null
  Add-Step 'user' "$user $how"
  return $user
}

function Enable-Remote {
  $sshd = Get-Service -Name sshd -ErrorAction SilentlyContinue
  if ($sshd) {
    Set-Service -Name sshd -StartupType Automatic
    Start-Service -Name sshd
    Add-Step 'ssh' 'sshd enabled and started'
  } else { Add-Step 'ssh' 'no OpenSSH Server on this image' }
  Set-ItemProperty -Path 'HKLM:\System\CurrentControlSet\Control\Terminal Server' -Name fDenyTSConnections -Value 0 -ErrorAction SilentlyContinue
  Enable-NetFirewallRule -DisplayGroup 'Remote Desktop' -ErrorAction SilentlyContinue
}

# TightVNC keeps its password DES-encrypted with VNC's fixed key (8 characters at most).
function Set-VncPassword($Manifest) {
  $key = 'HKLM:\SOFTWARE\TightVNC\Server'
  if (-not (Test-Path $key)) { Add-Step 'vnc' "no VNC server in the image: the console is KubeVirt's VNC through the portal"; return }
  $password = if ($Manifest.PSObject.Properties['password']) { [string]$Manifest.password } else { '' }
  if (-not $password) { Add-Step 'vnc' 'no password in the manifest: VNC left as it is'; return }
  $plain = New-Object byte[] 8
  $bytes = [System.Text.Encoding]::ASCII.GetBytes($password)
  [Array]::Copy($bytes, $plain, [Math]::Min(8, $bytes.Length))
  $vncKey = [byte[]](23, 82, 107, 6, 35, 78, 88, 7)
  $des = [System.Security.Cryptography.DES]::Create()
  $des.Mode = [System.Security.Cryptography.CipherMode]::ECB
  $des.Padding = [System.Security.Cryptography.PaddingMode]::None
  $cipher = $des.CreateEncryptor($vncKey, $null).TransformFinalBlock($plain, 0, 8)
  Set-ItemProperty -Path $key -Name Password -Value $cipher -Type Binary
  Set-ItemProperty -Path $key -Name UseVncAuthentication -Value 1 -Type DWord
  Restart-Service -Name tvnserver -ErrorAction SilentlyContinue
  Add-Step 'vnc' ('TightVNC password set' + $(if ($password.Length -gt 8) { ' (VNC uses its first 8 characters)' } else { '' }))
}

# --- packages ----------------------------------------------------------------------------------

function Get-PackageFileName([string]$Url, [int]$Index) {
  $path = ($Url -split '[?#]')[0].TrimEnd('/')
  $name = [System.Uri]::UnescapeDataString(($path -split '/')[-1])
  $name = ($name -replace '[^A-Za-z0-9._+~@,=-]', '_').TrimStart('.')
  if ($name.Length -gt 200) { $name = $name.Substring(0, 200) }
  if (-not $name -or $name -match '^[._]*$') { $name = "package-$Index" }
  return $name
}

function Get-FreshPath([string]$Dir, [string]$Name) {
  $p = Join-Path $Dir $Name
  $n = 2
  while (Test-Path -LiteralPath $p) { $p = Join-Path $Dir "$Name-$n"; $n++ }
  return $p
}

# Runs a process with a timeout; returns its exit code (-1 when it was stopped).
function Invoke-Step([string]$File, [string[]]$Arguments, [string]$Log, [string]$Dir = $null) {
  Add-Content -Path $Log -Value "+ $File $($Arguments -join ' ')"
  $out = "$Log.out"; $err = "$Log.err"
  $params = @{ FilePath = $File; ArgumentList = $Arguments; PassThru = $true; NoNewWindow = $true; RedirectStandardOutput = $out; RedirectStandardError = $err }
  if ($Dir) { $params['WorkingDirectory'] = $Dir }
  $p = Start-Process @params
  $null = $p.Handle # without it, ExitCode stays empty after WaitForExit
  if (-not $p.WaitForExit($InstallTimeout * 1000)) {
    Stop-Process -Id $p.Id -Force -ErrorAction SilentlyContinue
    Add-Content -Path $Log -Value "(stopped after $InstallTimeout s: CODEBROWSE_INSTALL_TIMEOUT)"
    return -1
  }
  foreach ($f in @($out, $err)) { if (Test-Path $f) { Get-Content $f | Add-Content -Path $Log; Remove-Item $f } }
  return $p.ExitCode
}

# Which silent flags an .exe installer takes, by the marks its builder leaves in the file.
function Get-SilentFlags([string]$File) {
  $head = [System.IO.File]::ReadAllBytes($File)
  $text = [System.Text.Encoding]::ASCII.GetString($head, 0, [Math]::Min($head.Length, 4MB))
  if ($text -match 'Nullsoft') { return , @('/S') }
  if ($text -match 'Inno Setup') { return , @('/VERYSILENT', '/SUPPRESSMSGBOXES', '/NORESTART', '/SP-') }
  if ($text -match 'WixBundle|\.wixburn') { return , @('/quiet', '/norestart') }
  if ($text -match 'InstallShield') { return , @('/s', '/v"/qn REBOOT=ReallySuppress"') }
  return , @('/quiet', '/norestart')
}

# Refuses a zip before unpacking: absolute or .. paths, too many entries, too many bytes.
function Test-Zip([string]$File) {
  Add-Type -AssemblyName System.IO.Compression.FileSystem
  $zip = [System.IO.Compression.ZipFile]::OpenRead($File)
  try {
    $cap = [Math]::Min($MaxBytes, (Get-Item $File).Length * $MaxRatio)
    if ($zip.Entries.Count -gt $MaxEntries) { return "entry-count: more than $MaxEntries entries" }
    $total = [int64]0
    foreach ($e in $zip.Entries) {
      $name = $e.FullName -replace '\\', '/'
      if ($name -match '^/|^[A-Za-z]:') { return "absolute-path: entry '$($e.FullName)'" }
      if (($name -split '/') -contains '..') { return "parent-dir: entry '$($e.FullName)'" }
      $total += $e.Length
      if ($total -gt $cap) { return "size: the entries add up to more than $cap bytes" }
    }
  } finally { $zip.Dispose() }
  return $null
}

function Install-Package([string]$File, [string]$Name, [string]$HomeDir, [string]$Log) {
  $result = @{ Installed = $false; Exit = $null; Summary = '' }
  switch -Regex ($Name) {
    '\.msi$' {
      $code = Invoke-Step 'msiexec.exe' @('/i', "`"$File`"", '/qn', '/norestart', '/l*v', "`"$Log.msi`"") $Log
      if (Test-Path "$Log.msi") { Get-Content "$Log.msi" -Tail 40 | Add-Content -Path $Log; Remove-Item "$Log.msi" }
      $result.Exit = $code
      # 3010: installed, a restart is needed (a session VM is not restarted for it).
      $result.Installed = ($code -eq 0 -or $code -eq 3010)
      $result.Summary = "msiexec exited $code"
    }
    '\.exe$' {
      $flags = Get-SilentFlags $File
      $code = Invoke-Step $File $flags $Log
      $result.Exit = $code
      $result.Installed = ($code -eq 0 -or $code -eq 3010)
      $result.Summary = "$Name $($flags -join ' ') exited $code"
    }
    '\.zip$' {
      $why = Test-Zip $File
      if ($why) { $result.Summary = "refused by the archive rule $why"; Add-Content -Path $Log -Value $result.Summary; break }
      $dir = Get-FreshPath $HomeDir ([System.IO.Path]::GetFileNameWithoutExtension($Name))
      Expand-Archive -LiteralPath $File -DestinationPath $dir
      Add-Content -Path $Log -Value "unpacked into $dir"
      $script = @('codebrowse-install.ps1', 'codebrowse-install.cmd', 'install.ps1', 'install.cmd') | ForEach-Object { Join-Path $dir $_ } | Where-Object { Test-Path $_ } | Select-Object -First 1
      if ($script) {
        $code = if ($script -like '*.ps1') { Invoke-Step 'powershell.exe' @('-NoProfile', '-ExecutionPolicy', 'Bypass', '-File', "`"$script`"") $Log $dir } else { Invoke-Step 'cmd.exe' @('/c', "`"$script`"") $Log $dir }
        $result.Exit = $code; $result.Installed = ($code -eq 0); $result.Summary = "$(Split-Path $script -Leaf) exited $code"
      } else {
        $result.Exit = 0; $result.Installed = $true; $result.Summary = "unpacked into $dir (nothing to run)"
      }
    }
    default { $result.Summary = 'no install rule for this file type on Windows (known: .msi .exe .zip)' }
  }
  return $result
}

function Get-Tail([string]$File) {
  if (-not (Test-Path $File)) { return '' }
  $bytes = [System.IO.File]::ReadAllBytes($File)
  $start = [Math]::Max(0, $bytes.Length - $MessageBytes)
  return [System.Text.Encoding]::UTF8.GetString($bytes, $start, $bytes.Length - $start)
}

# --- main --------------------------------------------------------------------------------------

$Config = $null
$said = $false
while (-not ($Config = Get-Config)) {
  if (-not $said) { Write-Log "no portal URL and token yet (environment, $ConfigFile or a NoCloud disk); waiting"; $said = $true }
  Start-Sleep -Seconds $PollSeconds
}
Write-Log "portal $($Config.Portal); waiting for the manifest"
$last = ''
while ($true) {
  $r = Invoke-Portal -Method GET -Url "$($Config.Portal)/agent/v1/manifest"
  if ($r.Status -eq 200) {
    try { $Manifest = $r.Body | ConvertFrom-Json; break } catch { $now = "the manifest is not JSON: $($_.Exception.Message)" }
  } elseif ($r.Status -eq 204) { $now = 'unclaimed: waiting for a session' }
  elseif ($r.Status -eq 0) { $now = "the portal does not answer: $($r.Error)" }
  else { $now = "the portal answered HTTP $($r.Status)" }
  if ($now -ne $last) { Write-Log $now; $last = $now }
  Start-Sleep -Seconds $PollSeconds
}

$session = if ($Manifest.PSObject.Properties['session']) { [string]$Manifest.session } else { 'unknown' }
$SD = Join-Path $StateRoot ('sessions\' + ($session -replace '[^A-Za-z0-9._-]', '_'))
New-Item -ItemType Directory -Force -Path $SD | Out-Null
Write-Log "claimed by session $session"

$setupOk = $true
if (-not (Set-SessionHostname $Manifest)) { $setupOk = $false }
if (-not (Set-SessionAddress $Manifest)) { $setupOk = $false }
$user = New-SessionUser $Manifest
if (-not $user) { $setupOk = $false }
Enable-Remote
Set-VncPassword $Manifest
$profileDir = if ($user) { Join-Path $env:SystemDrive "Users\$user" } else { $null }
if ($profileDir) { New-Item -ItemType Directory -Force -Path $profileDir | Out-Null }

$packages = @()
if ($Manifest.PSObject.Properties['packages'] -and $Manifest.packages) { $packages = @($Manifest.packages) }
$script = if ($Manifest.PSObject.Properties['installScript']) { [string]$Manifest.installScript } else { '' }
$downloads = if ($profileDir) { Join-Path $profileDir 'Downloads\codebrowse' } else { $null }
if ($downloads) { New-Item -ItemType Directory -Force -Path $downloads | Out-Null }

$ok = 0; $failed = New-Object System.Collections.Generic.List[string]; $undelivered = 0
$fetched = @{}
for ($k = 0; $k -lt $packages.Count; $k++) {
  $pkg = $packages[$k]
  $index = if ($pkg.PSObject.Properties['index']) { [int]$pkg.index } else { $k }
  $resultFile = Join-Path $SD "pkg-$index.json"
  if (Test-Path $resultFile) { continue }
  $log = Join-Path $SD "pkg-$index.log"
  Set-Content -Path $log -Value '' -Encoding UTF8
  $url = if ($pkg.PSObject.Properties['url']) { [string]$pkg.url } else { '' }
  $name = Get-PackageFileName $url $index
  $res = @{ Installed = $false; Exit = $null; Summary = '' }
  if (-not $user) { $res.Summary = 'the session user could not be set up' }
  else {
    $file = Get-FreshPath $downloads $name
    $download = if ($pkg.PSObject.Properties['download']) { [string]$pkg.download } else { '' }
    $from = if ($download -like '/*') { "$($Config.Portal)$download" } else { $url }
    $get = Invoke-Portal -Method GET -Url $from -OutFile $file -NoAuth:($download -notlike '/*')
    if ($get.Status -ne 200) { $res.Summary = "download failed: HTTP $($get.Status) $($get.Error)" }
    else {
      $digest = if ($pkg.PSObject.Properties['digest']) { [string]$pkg.digest } else { '' }
      $got = (Get-FileHash -Algorithm SHA256 -LiteralPath $file).Hash.ToLowerInvariant()
      if ($digest -notlike 'sha256:*') { $res.Summary = 'the manifest has no sha256 digest for it: not installed unverified' }
      elseif ($got -ne $digest.Substring(7).ToLowerInvariant()) { $res.Summary = "checksum mismatch: sha256 $got, expected $($digest.Substring(7))" }
      else {
        Add-Content -Path $log -Value 'sha256 verified'
        if ($script) { $fetched[$index] = $file; continue }
        $res = Install-Package $file $name $profileDir $log
      }
      if (-not $res.Installed -and $res.Summary -like 'checksum mismatch*') { Remove-Item -LiteralPath $file -Force }
    }
  }
  if (-not $res.Installed -and $user) {
    Set-Content -Path (Join-Path $downloads "$name.codebrowse-note.txt") -Value "codebrowse could not install $name`r`nfrom: $url`r`nwhy:  $($res.Summary)`r`n`r`n$(Get-Tail $log)"
  }
  Add-Content -Path $log -Value $res.Summary
  Write-Log "package ${index}: installed=$($res.Installed) $($res.Summary)"
  @{ installed = $res.Installed; exitCode = $res.Exit } | ConvertTo-Json | Set-Content -Path $resultFile
}

if ($script -and $fetched.Count -gt 0 -and -not (Test-Path (Join-Path $SD 'script.json'))) {
  # The session's installScript replaces the suffix rules: once, as PowerShell, in the downloads.
  $scriptFile = Join-Path $SD 'install-script.ps1'
  Set-Content -Path $scriptFile -Value $script -Encoding UTF8
  $slog = Join-Path $SD 'script.log'
  $names = @($fetched.Keys | Sort-Object | ForEach-Object { "`"$(Split-Path $fetched[$_] -Leaf)`"" })
  $code = Invoke-Step 'powershell.exe' (@('-NoProfile', '-ExecutionPolicy', 'Bypass', '-File', "`"$scriptFile`"") + $names) $slog $downloads
  @{ exitCode = $code } | ConvertTo-Json | Set-Content -Path (Join-Path $SD 'script.json')
  foreach ($index in $fetched.Keys) {
    $log = Join-Path $SD "pkg-$index.log"
    Add-Content -Path $log -Value "installScript exited $code"
    Get-Content $slog | Add-Content -Path $log
    @{ installed = ($code -eq 0); exitCode = $code } | ConvertTo-Json | Set-Content -Path (Join-Path $SD "pkg-$index.json")
  }
}

for ($k = 0; $k -lt $packages.Count; $k++) {
  $pkg = $packages[$k]
  $index = if ($pkg.PSObject.Properties['index']) { [int]$pkg.index } else { $k }
  $saved = Get-Content (Join-Path $SD "pkg-$index.json") -Raw | ConvertFrom-Json
  if ($saved.installed) { $ok++ } else { $failed.Add([string]$index) }
  $reported = Join-Path $SD "pkg-$index.reported"
  if (Test-Path $reported) { continue }
  $body = [ordered]@{ package = $index; installed = [bool]$saved.installed }
  if ($null -ne $saved.exitCode) { $body.exitCode = [int]$saved.exitCode }
  $body.message = Get-Tail (Join-Path $SD "pkg-$index.log")
  if (Send-Report '/agent/v1/report' $body) { New-Item -ItemType File -Force -Path $reported | Out-Null } else { $undelivered++ }
}

$doneMarker = Join-Path $SD 'done.reported'
if (Test-Path $doneMarker) { Write-Log 'done was reported before; nothing more to do'; exit 0 }
$all = $setupOk -and $failed.Count -eq 0
$message = if ($all) { "all is well: $ok of $($packages.Count) packages installed" } else { "$ok of $($packages.Count) packages installed; failed: $($failed -join ', ')" }
$message = "$message. $($Steps -join '; ')"
if ($message.Length -gt 1000) { $message = $message.Substring(0, 1000) }
if ($undelivered -eq 0 -and (Send-Report '/agent/v1/done' ([ordered]@{ installed = $all; message = $message }))) {
  New-Item -ItemType File -Force -Path $doneMarker | Out-Null
  Write-Log "reported done (installed: $all)"
  exit 0
}
Write-Log 'the done report did not reach the portal; exiting with failure so the task runs again'
exit 1
