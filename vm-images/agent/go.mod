module codebrowse.io/agent

go 1.26

require (
	github.com/ulikunitz/xz v0.5.17
	golang.org/x/sys v0.47.0
)

require golang.org/x/crypto v0.55.0
