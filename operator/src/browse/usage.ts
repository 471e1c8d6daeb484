// The help texts of kubectl browse and its subcommands.

const CONNECTION = `  -n, --namespace NS        namespace (default: the kubeconfig context's, else default)
      --kubeconfig PATH     kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)
      --context NAME        kubeconfig context to use instead of the current one
  -h, --help                show this help`;

export const CREATE_USAGE = `Usage: kubectl browse URL... [flags]

Asks codebrowse for a fresh VM with the packages at URL... installed (in that order), shows each
step as it happens (queue, downloads with progress bars, node and address, VM, install results,
DNS), and prints the session page link and how to log in.

Flags:
      --os linux|windows    operating system of the VM (default linux)
      --duration DURATION   booked time from Ready, e.g. 2h or 1h30m (default: the pool's)
      --persistent          own copy of the disk, so reboots keep changes (slower to start)
      --ssh-key FILE        an OpenSSH public key file to log in with (repeatable; without one,
                            a password is generated and shown on the session page)
      --pool NAME           ServerPool (default: the only one, if there is exactly one)
      --image NAME          a particular image of the pool (default: its first of the OS)
      --user NAME           login name (default: your name on the API server)
      --email ADDR          where the link is mailed (default: git config user.email)
      --name NAME           name of the BrowseSession (default: <user>-<random>)
      --label KEY=VALUE     a label on the BrowseSession (repeatable)
  -o, --output json|yaml    print the session object instead of the summary (progress goes to stderr)
      --no-wait             create the session and return at once
      --timeout DURATION    give up waiting after this long (default 10m; the session goes on)
${CONNECTION}

Exit status: 0 when the session is Ready, 1 when it failed or the server refused it, 2 on bad usage.

Other commands:
  kubectl browse list       your sessions
  kubectl browse end NAME   end a session now
  kubectl browse link NAME  the link to your session's page
  kubectl browse extend NAME --by 30m
  kubectl browse cache      recent downloads (--popular: the most browsed; --also URL)
  kubectl browse archive    list|create|restore|delete archived sessions
  kubectl browse ssh NAME   log in through the Kubernetes API (sessions of PodNetwork pools)
  kubectl browse port-forward NAME [LOCAL:]PORT
`;

export const LIST_USAGE = `Usage: kubectl browse list [flags]

Lists your sessions: name, phase, host name, address, expiry and age.

Flags:
  -A, --all-namespaces      sessions of every namespace
      --user NAME           sessions of this user (default: you)
      --all-users           sessions of every user
  -o, --output json|yaml    print the objects
${CONNECTION}
`;

export const END_USAGE = `Usage: kubectl browse end NAME [flags]

Ends a session now: its VM, address and DNS name are released (the downloads stay cached).

Flags:
      --no-wait             do not wait until the session is gone
      --timeout DURATION    how long to wait (default 2m)
${CONNECTION}
`;

export const LINK_USAGE = `Usage: kubectl browse link NAME [flags]

Prints the link to your session's page (host, address, time left, the password, the console). The
link carries the page's token, so only the session's user can read it (from the session's login
Secret, which codebrowse lets them alone read) and the mail to spec.email has it; the session's
status.url shows the page's address without it.

Flags:
${CONNECTION}
`;

export const EXTEND_USAGE = `Usage: kubectl browse extend NAME --by DURATION [flags]

Books more time: adds DURATION to the session's spec.duration and prints the new expiry once the
operator has moved it.

Flags:
      --by DURATION         how much longer, e.g. 30m or 1h
  -o, --output json|yaml    print the session object
      --no-wait             do not wait for the new expiry
      --timeout DURATION    how long to wait for it (default 1m)
${CONNECTION}
`;

export const CACHE_USAGE = `Usage: kubectl browse cache [flags]
       kubectl browse cache --popular [--window 7d] [--top 10] [flags]
       kubectl browse cache --also URL [--window 7d] [--top 10] [flags]

Recent downloads (from the DownloadRequests you can see), one line per URL: size, digest, when it
was last fetched, how often it was requested, and how many of those came from the cache.

With --popular: the packages the most sessions browsed within the window (each session counts a
package once; sessions of every namespace and user, ended ones too). With --also URL: what the
sessions that browsed URL also browsed, by the number of those sessions. Equal counts are listed in
URL order. Both come from the portal, which keeps the store's usage history.

Flags:
  -A, --all-namespaces      downloads of every namespace
      --filter TEXT         only URLs or digests containing TEXT
      --popular             the most browsed packages
      --also URL            what the sessions that browsed URL also browsed
      --window DURATION     how far back to count, e.g. 24h, 7d or 1d12h (default 7d)
      --top N               at most N packages, 1 to 100 (default 10)
      --portal URL          the codebrowse portal (default: $CODEBROWSE_PORTAL, else the address in
                            the page link of the newest session in the namespace)
  -o, --output json|yaml    print the rows as objects
${CONNECTION}
`;

export const ARCHIVE_USAGE = `Usage: kubectl browse archive list|create|restore|delete [flags]

The snapshot archive: a running session's VM kept as a VirtualMachineSnapshot (a SessionArchive),
for its user only, under the pool's per-user quota and for its retention period. A new session
can start from an archive: it gets its own copy of the archived disk; the archive stays as it was.

  kubectl browse archive list                     your archives: name, phase, session, packages, expiry
  kubectl browse archive create SESSION           archive a Ready session of yours (its VM goes on)
        --name NAME           the archive's name (default: <session>-<random>)
        --retention DURATION  keep it this long, e.g. 168h (default and longest: the pool's)
  kubectl browse archive restore ARCHIVE          a new session from the archive, followed to Ready
        --name NAME           the new session's name (default: <user>-<random>)
        --duration DURATION   its booked time (default: the pool's)
        --email ADDR          where its link is mailed (default: git config user.email)
  kubectl browse archive delete ARCHIVE           delete the archive and its snapshot

Flags:
  -A, --all-namespaces      list: in every namespace you may read
  -o, --output json|yaml    print the object(s)
      --no-wait             create/restore/delete: return at once
      --timeout DURATION    give up waiting after this long (default 5m; restore 15m)
${CONNECTION}

Exit status: 0 done, 1 refused by the server (another user's archive is not yours to read) or
failed, 2 bad usage.
`;

export const SSH_USAGE = `Usage: kubectl browse ssh NAME [flags] [-- SSH ARGS]

Logs in to the session's VM with ssh, through the Kubernetes API: KubeVirt's port-forward
(virt-api) carries the connection, so this works where the VM's address is not reachable, such as
a session of a pool with addressing PodNetwork (its address is a pod IP inside the cluster). Only
the session's user may: the operator lets that user, and nobody else, port-forward to that VM.
Sessions of pools on the hosts' LAN are reached directly: ssh USER@HOSTNAME.

Flags:
      --port N              the VM's ssh port (default 22)
  -l, --user NAME           log in as NAME (default: the session's spec.user)
      --ssh PATH            the ssh client (default ssh from PATH)
  -- SSH ARGS               ssh options and a remote command, e.g. -- -i ~/.ssh/id_ed25519 uname -a
${CONNECTION}

Exit status: ssh's, or 1 when the session has no running VM or the API server refused.
`;

export const PORT_FORWARD_USAGE = `Usage: kubectl browse port-forward NAME [LOCAL:]PORT [flags]

Forwards LOCAL (default: the same number; 0 picks a free one) on this machine to PORT of the
session's VM, through KubeVirt's port-forward (virt-api), one WebSocket per connection, until
interrupted.

Flags:
      --address ADDR        where to listen (default 127.0.0.1)
      --stdio               one connection on stdin and stdout instead (ssh's ProxyCommand)
${CONNECTION}
`;

export const USAGES = {
  create: CREATE_USAGE,
  list: LIST_USAGE,
  end: END_USAGE,
  link: LINK_USAGE,
  extend: EXTEND_USAGE,
  cache: CACHE_USAGE,
  archive: ARCHIVE_USAGE,
  ssh: SSH_USAGE,
  'port-forward': PORT_FORWARD_USAGE,
} as const;

export type Command = keyof typeof USAGES;
