{{/*
Names are fixed rather than derived from the release: the operator is one per cluster, its ClusterRole is
`saaschat-operator` (files/operator-rbac.yaml), and the docs refer to these names.
*/}}
{{- define "saaschat.name" -}}saaschat-operator{{- end -}}

{{- define "saaschat.chart" -}}
{{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels of every object of the chart. Not `managed-by: saaschat-operator`: that marks tenant objects. */}}
{{- define "saaschat.labels" -}}
helm.sh/chart: {{ include "saaschat.chart" . }}
{{ include "saaschat.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: saaschat
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "saaschat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "saaschat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "saaschat.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
