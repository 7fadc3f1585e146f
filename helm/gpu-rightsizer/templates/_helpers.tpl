{{/*
gpu-rightsizer.name: the chart name, or nameOverride; cut to 63 characters (a label value).
*/}}
{{- define "gpu-rightsizer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
gpu-rightsizer.fullname: the name of namespaced resources: fullnameOverride, else the release
name, with the chart name appended unless the release name already contains it.
*/}}
{{- define "gpu-rightsizer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
gpu-rightsizer.chart: chart name and version, for the helm.sh/chart label.
*/}}
{{- define "gpu-rightsizer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
gpu-rightsizer.selectorLabels: the labels that select the operator's pod (immutable once
installed: never add to them).
*/}}
{{- define "gpu-rightsizer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-rightsizer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
gpu-rightsizer.sharedLabels: the labels every resource carries besides its selector labels:
version, part-of, manager, chart, and commonLabels.
*/}}
{{- define "gpu-rightsizer.sharedLabels" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: gpu-rightsizer
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "gpu-rightsizer.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
gpu-rightsizer.labels: the labels of the operator's resources: selector labels and the shared
labels.
*/}}
{{- define "gpu-rightsizer.labels" -}}
{{ include "gpu-rightsizer.selectorLabels" . }}
{{ include "gpu-rightsizer.sharedLabels" . }}
{{- end }}

{{/*
gpu-rightsizer.agentName: the name of the node agent's resources.
*/}}
{{- define "gpu-rightsizer.agentName" -}}
{{- printf "%s-agent" (include "gpu-rightsizer.fullname" .) }}
{{- end }}

{{/*
gpu-rightsizer.agentSelectorLabels: the labels that select the node agent's pods (immutable once
installed: never add to them). The component differs from the operator's, so neither the
Deployment nor the DaemonSet selects the other's pods, and neither Service the other's endpoints.
*/}}
{{- define "gpu-rightsizer.agentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-rightsizer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{/*
gpu-rightsizer.agentLabels: the labels of the node agent's resources: its selector labels and the
shared labels.
*/}}
{{- define "gpu-rightsizer.agentLabels" -}}
{{ include "gpu-rightsizer.agentSelectorLabels" . }}
{{ include "gpu-rightsizer.sharedLabels" . }}
{{- end }}

{{/*
gpu-rightsizer.serviceAccountName: the ServiceAccount the operator runs as.
*/}}
{{- define "gpu-rightsizer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpu-rightsizer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
gpu-rightsizer.agentServiceAccountName: the ServiceAccount the node agent runs as.
*/}}
{{- define "gpu-rightsizer.agentServiceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "gpu-rightsizer.agentName" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
gpu-rightsizer.image: repository with the digest when given, else the tag (default appVersion).
*/}}
{{- define "gpu-rightsizer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
gpu-rightsizer.watchNamespaces: the watched namespaces, after checking the RBAC mode: namespaced
RBAC needs the list, since Roles can only be granted in namespaces that are named.
*/}}
{{- define "gpu-rightsizer.watchNamespaces" -}}
{{- if and (not .Values.rbac.clusterWide) (not .Values.watchNamespaces) }}
{{- fail "rbac.clusterWide=false needs watchNamespaces: the namespaces to grant Roles in and watch" }}
{{- end }}
{{- join "," .Values.watchNamespaces }}
{{- end }}

{{/*
gpu-rightsizer.catalogOverrides: the --catalog-overrides file, from the catalog values; keys
left unset keep the packaged catalog's defaults.
*/}}
{{- define "gpu-rightsizer.catalogOverrides" -}}
{{- $out := dict }}
{{- with .Values.catalog }}
{{- if .currency }}{{ $_ := set $out "currency" .currency }}{{ end }}
{{- if not (kindIs "invalid" .pue) }}{{ $_ := set $out "pue" .pue }}{{ end }}
{{- if not (kindIs "invalid" .gridCarbonIntensityGramsPerKwh) }}{{ $_ := set $out "gridCarbonIntensityGramsPerKwh" .gridCarbonIntensityGramsPerKwh }}{{ end }}
{{- if .prices }}{{ $_ := set $out "prices" .prices }}{{ end }}
{{- end }}
{{- if $out }}{{ toYaml $out }}{{ else }}{}{{ end }}
{{- end }}
