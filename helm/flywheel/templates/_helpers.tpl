{{/* Common labels of every object. */}}
{{- define "flywheel.labels" -}}
app.kubernetes.io/name: flywheel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flywheel
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "mlflow"). */}}
{{- define "flywheel.selector" -}}
app.kubernetes.io/name: flywheel
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "flywheel.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The namespace step pods run in. */}}
{{- define "flywheel.stepNamespace" -}}
{{- default .Release.Namespace .Values.settings.namespace -}}
{{- end -}}

{{- define "flywheel.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{- define "flywheel.gpuImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Values.image.tag .Values.image.gpuTag) -}}
{{- end -}}

{{- define "flywheel.mlflowUri" -}}
{{- printf "http://%s.%s.svc:%v" (include "flywheel.fullname" (dict "root" . "component" "mlflow")) .Release.Namespace .Values.mlflow.port -}}
{{- end -}}

{{/* Restricted Pod Security Standard: the pod part. */}}
{{- define "flywheel.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted Pod Security Standard: the container part. */}}
{{- define "flywheel.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "flywheel.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The data root: FLYWHEEL_DATA_ROOT. */}}
{{- define "flywheel.dataRoot" -}}
{{- if eq .Values.dataRoot.mode "pvc" -}}
{{- .Values.dataRoot.pvc.mountPath -}}
{{- else -}}
{{- required "dataRoot.objectStore.uri is required with dataRoot.mode=objectStore" .Values.dataRoot.objectStore.uri -}}
{{- end -}}
{{- end -}}
