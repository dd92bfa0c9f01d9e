{{/* Base name of every object; the runbook calls the service erp-connector-service. */}}
{{- define "erp-connector-dagster.fullname" -}}
{{- default "erp-connector-service" .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "erp-connector-dagster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. app=erp-connector-service is what the runbook's kubectl uses. */}}
{{- define "erp-connector-dagster.labels" -}}
app: erp-connector-service
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "erp-connector-dagster.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels; callers append app.kubernetes.io/component. */}}
{{- define "erp-connector-dagster.selectorLabels" -}}
app: erp-connector-service
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "erp-connector-dagster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "erp-connector-dagster.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "erp-connector-dagster.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* Environment shared by every container: non-secret config map plus the existing Secret. */}}
{{- define "erp-connector-dagster.envFrom" -}}
- configMapRef:
    name: {{ include "erp-connector-dagster.fullname" . }}-config
- secretRef:
    name: {{ .Values.secrets.existingSecret }}
{{- end -}}

{{/* The Dagster instance (dagster.yaml) mounted as DAGSTER_HOME. */}}
{{- define "erp-connector-dagster.instanceVolume" -}}
- name: dagster-instance
  configMap:
    name: {{ include "erp-connector-dagster.fullname" . }}-dagster-instance
{{- end -}}

{{- define "erp-connector-dagster.instanceMount" -}}
- name: dagster-instance
  mountPath: {{ .Values.dagster.home }}/dagster.yaml
  subPath: dagster.yaml
  readOnly: true
{{- end -}}

{{- define "erp-connector-dagster.workspaceVolume" -}}
- name: dagster-workspace
  configMap:
    name: {{ include "erp-connector-dagster.fullname" . }}-workspace
{{- end -}}

{{- define "erp-connector-dagster.workspaceMount" -}}
- name: dagster-workspace
  mountPath: /opt/dagster/workspace
  readOnly: true
{{- end -}}
