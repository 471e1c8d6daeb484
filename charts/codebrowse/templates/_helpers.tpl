{{- define "codebrowse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "codebrowse.labels" -}}
app.kubernetes.io/name: codebrowse
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "codebrowse.selector" -}}
app.kubernetes.io/name: codebrowse
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "codebrowse.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "codebrowse.portalUrl" -}}
{{- .Values.operator.portalUrl | default (printf "http://%s-portal.%s.svc:%v" (include "codebrowse.fullname" .) .Release.Namespace .Values.portal.service.port) -}}
{{- end -}}

{{- define "codebrowse.pageBaseUrl" -}}
{{- if .Values.operator.pageBaseUrl -}}
{{- .Values.operator.pageBaseUrl -}}
{{- else if .Values.portal.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.portal.ingress.tls) 0)) .Values.portal.ingress.host -}}
{{- else -}}
{{- include "codebrowse.portalUrl" . -}}
{{- end -}}
{{- end -}}

{{- define "codebrowse.storeClaim" -}}
{{- .Values.downloader.store.existingClaim | default (printf "%s-store" (include "codebrowse.fullname" .)) -}}
{{- end -}}

{{/* Pod and container security: non-root, read-only root filesystem, no privileges. */}}
{{- define "codebrowse.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "codebrowse.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end -}}

{{- define "codebrowse.probes" -}}
livenessProbe:
  httpGet: { path: /healthz, port: http }
  periodSeconds: 20
  failureThreshold: 3
readinessProbe:
  httpGet: { path: /readyz, port: http }
  periodSeconds: 5
{{- end -}}
