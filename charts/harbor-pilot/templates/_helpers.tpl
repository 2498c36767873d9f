{{/* The name of the release's objects: the release name if it says harbor-pilot. */}}
{{- define "harbor-pilot.fullname" -}}
{{- if contains "harbor-pilot" .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-harbor-pilot" .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "harbor-pilot.selectorLabels" -}}
app.kubernetes.io/name: harbor-pilot
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "harbor-pilot.labels" -}}
{{ include "harbor-pilot.selectorLabels" . }}
app.kubernetes.io/part-of: harbor-pilot
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.extraLabels }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{- define "harbor-pilot.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}:{{ $tag }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* The Secret the serving certificate is in. */}}
{{- define "harbor-pilot.tlsSecret" -}}
{{- if eq .Values.certificates.mode "secret" -}}
{{ .Values.certificates.secretName }}
{{- else -}}
{{ include "harbor-pilot.fullname" . }}-tls
{{- end -}}
{{- end -}}

{{/* The Service's DNS names, which the serving certificate must carry. */}}
{{- define "harbor-pilot.dnsNames" -}}
{{- $service := include "harbor-pilot.fullname" . -}}
- {{ $service }}.{{ .Release.Namespace }}.svc
- {{ $service }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}

{{/* The config file. A section set to null in values (health: null) is left out. */}}
{{- define "harbor-pilot.config" -}}
{{ toYaml .Values.config }}
{{- end -}}
