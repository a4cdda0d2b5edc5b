# A failed night reaches a person: a log-based metric counts failed pipeline jobs, and an alert
# policy on it notifies var.notification_channels (create the channels, e-mail, SMS or PagerDuty,
# in Cloud Monitoring, and pass their ids). Two kinds of log entries count, so the alert fires on
# either target:
#   - Vertex AI Pipelines' own entry for a pipeline job that ended in PIPELINE_STATE_FAILED;
#   - the ERROR line the pipelines' exit handlers log (`fmnist record-failure`, structured logs
#     with the label step=record-failure): on Vertex AI and on Kubeflow Pipelines on GKE alike.
# docs/operations.md says what to do when it fires.
locals {
  failed_pipeline_jobs_filter = join(" OR ", [
    "(resource.type=\"aiplatform.googleapis.com/PipelineJob\" AND jsonPayload.state=\"PIPELINE_STATE_FAILED\")",
    "(severity=ERROR AND labels.step=\"record-failure\")",
  ])
}

resource "google_logging_metric" "failed_pipeline_jobs" {
  name        = "fmnist-failed-pipeline-jobs"
  description = "Pipeline jobs of fmnist-jobs that failed (Vertex AI's state entry, or an exit handler's ERROR line)."
  filter      = local.failed_pipeline_jobs_filter
  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "fmnist failed pipeline jobs"
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "failed_pipeline_job" {
  display_name          = "fmnist pipeline job failed"
  combiner              = "OR"
  notification_channels = var.notification_channels
  conditions {
    display_name = "a pipeline job failed in the last 5 minutes"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.failed_pipeline_jobs.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }
  alert_strategy {
    auto_close = "86400s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "A pipeline job of fmnist-jobs failed. `fmnist status --scores gs://${google_storage_bucket.tables.name}` names the dates without an ok run; the `runs` view holds the failure record (task, exit code, last error line, pipeline job). What to do: docs/operations.md."
  }

  depends_on = [google_project_service.apis]
}
