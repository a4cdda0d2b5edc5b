variable "project_id" {
  description = "Google Cloud project of the jobs; also the prefix of bucket names (<project_id>-data, ...)."
  type        = string
}

variable "region" {
  description = "Region of the buckets, the image repository, the BigQuery dataset and the Dataflow jobs."
  type        = string
  default     = "europe-west4"
}

variable "kfp_namespace" {
  description = "Kubernetes namespace whose KFP task pods run as the pipeline runner (Workload Identity)."
  type        = string
  default     = "kubeflow"
}

variable "kfp_service_account" {
  description = "Kubernetes service account of the KFP task pods, mapped to the pipeline runner account."
  type        = string
  default     = "pipeline-runner"
}

variable "incoming_retention_days" {
  description = "Days the incoming shards to score are kept after upload."
  type        = number
  default     = 180
}

variable "scratch_retention_days" {
  description = "Days pipeline artifacts and Dataflow temp/staging files are kept."
  type        = number
  default     = 30
}

variable "staging_retention_days" {
  description = "Days a scoring attempt's staged files may stay in the tables bucket (an attempt killed before cleaning up)."
  type        = number
  default     = 7
}

variable "noncurrent_retention_days" {
  description = "Days a replaced or deleted object version stays restorable."
  type        = number
  default     = 30
}

variable "analysts" {
  description = "Members who query the tables (\"group:analysts@example.com\", ...): read the tables bucket and the BigQuery views, run query jobs."
  type        = list(string)
  default     = []
}

variable "pipeline_submitters" {
  description = "Members who submit pipeline runs and schedules to Vertex AI Pipelines as the runner account (a release pipeline's account, an operator group)."
  type        = list(string)
  default     = []
}
