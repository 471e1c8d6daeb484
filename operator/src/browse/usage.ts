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
  kubectl browse extend NAME --by 30m
  kubectl browse cache      recent downloads
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

Recent downloads (from the DownloadRequests you can see), one line per URL: size, digest, when it
was last fetched, how often it was requested, and how many of those came from the cache.

Flags:
  -A, --all-namespaces      downloads of every namespace
      --filter TEXT         only URLs or digests containing TEXT
  -o, --output json|yaml    print the rows as objects
${CONNECTION}
`;

export const USAGES = {
  create: CREATE_USAGE,
  list: LIST_USAGE,
  end: END_USAGE,
  extend: EXTEND_USAGE,
  cache: CACHE_USAGE,
} as const;

export type Command = keyof typeof USAGES;
