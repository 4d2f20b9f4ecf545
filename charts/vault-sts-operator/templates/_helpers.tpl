{{- define "vso.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vso.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "vso.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vso.labels" -}}
app.kubernetes.io/name: {{ include "vso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "vso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vso.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vso.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* repository:tag, or repository@digest when image.digest is set (the tag is then ignored). */ -}}
{{- define "vso.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- /* Pod Identity (podIdentity.*): names shared by the operator's arguments, RBAC and the agent. */ -}}
{{- define "vso.podIdentity.service" -}}
{{- printf "%s-pod-identity" (include "vso.fullname" .) -}}
{{- end -}}

{{- define "vso.podIdentity.agentName" -}}
{{- printf "%s-agent" (include "vso.fullname" .) -}}
{{- end -}}

{{- define "vso.podIdentity.tlsSecret" -}}
{{- .Values.podIdentity.tls.existingSecret | default (printf "%s-pod-identity-tls" (include "vso.fullname" .)) -}}
{{- end -}}

{{- /* The kubelet's variables for a Service of the pod's own namespace: <PREFIX>_SERVICE_HOST, _SERVICE_PORT. */ -}}
{{- define "vso.podIdentity.serviceEnvPrefix" -}}
{{- include "vso.podIdentity.service" . | upper | replace "-" "_" -}}
{{- end -}}

{{- /*
The agent's pods carry app.kubernetes.io/name <name>-agent: the operator's selector (name + instance, immutable
on the Deployment) must not select them, nor must its PodDisruptionBudget, metrics Service or NetworkPolicy.
*/ -}}
{{- define "vso.podIdentity.agentSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-agent" (include "vso.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: pod-identity-agent
{{- end -}}

{{- define "vso.podIdentity.agentLabels" -}}
{{- $labels := include "vso.labels" . | fromYaml -}}
{{- $labels = merge (include "vso.podIdentity.agentSelectorLabels" . | fromYaml) $labels -}}
{{- toYaml $labels -}}
{{- end -}}

{{- define "vso.podIdentity.agentImage" -}}
{{- $image := .Values.podIdentity.agent.image -}}
{{- if not $image.repository -}}
{{- include "vso.image" . -}}
{{- else if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository ($image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
