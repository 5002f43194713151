{{/*
Names. Kubernetes names and label values are at most 63 characters: every name is cut to fit,
and a suffixed name cuts its base so that the suffix survives (two objects never collide).
*/}}

{{- define "k8s-step-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "k8s-step-operator.fullname" -}}
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
"<fullname>-<suffix>", at most 63 characters with the suffix kept whole.
Usage: include "k8s-step-operator.suffixed" (list . "pipeline")
*/}}
{{- define "k8s-step-operator.suffixed" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $base := include "k8s-step-operator.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "k8s-step-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The steps' namespace: every namespaced object goes there. */}}
{{- define "k8s-step-operator.namespace" -}}
{{- default .Release.Namespace .Values.namespace.name | trunc 63 }}
{{- end }}

{{- define "k8s-step-operator.labels" -}}
helm.sh/chart: {{ include "k8s-step-operator.chart" . }}
{{ include "k8s-step-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: k8s-step-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "k8s-step-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "k8s-step-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "k8s-step-operator.pipelineServiceAccountName" -}}
{{- if .Values.pipeline.serviceAccount.create }}
{{- default (include "k8s-step-operator.suffixed" (list . "pipeline")) .Values.pipeline.serviceAccount.name }}
{{- else }}
{{- required "pipeline.serviceAccount.name is required when pipeline.serviceAccount.create is false" .Values.pipeline.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "k8s-step-operator.stepServiceAccountName" -}}
{{- if .Values.stepPods.serviceAccount.create }}
{{- default (include "k8s-step-operator.suffixed" (list . "step")) .Values.stepPods.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.stepPods.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "k8s-step-operator.gpuName" -}}
{{- include "k8s-step-operator.suffixed" (list . "gpu") }}
{{- end }}

{{- define "k8s-step-operator.topologyName" -}}
{{- default (include "k8s-step-operator.suffixed" (list . "topology")) .Values.kueue.topology.name }}
{{- end }}

{{- define "k8s-step-operator.localQueueName" -}}
{{- default "gpu" .Values.kueue.localQueue.name }}
{{- end }}
