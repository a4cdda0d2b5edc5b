output "buckets" {
  description = "Bucket names by purpose (the schedules' gs:// locations)."
  value = {
    data      = google_storage_bucket.data.name
    models    = google_storage_bucket.models.name
    tables    = google_storage_bucket.tables.name
    pipelines = google_storage_bucket.pipelines.name
  }
}

output "service_accounts" {
  description = "Emails of the pipeline runner and the Dataflow worker accounts."
  value = {
    pipeline_runner = google_service_account.pipeline_runner.email
    dataflow_worker = google_service_account.dataflow_worker.email
  }
}

output "image_repository" {
  description = "Where the release pushes the jobs and worker images."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "bigquery_views" {
  description = "The views analysts query: predictions, predictions_current, errors, runs."
  value = concat([for view in google_bigquery_table.named_parts : view.id],
  [google_bigquery_table.predictions_current.id, google_bigquery_table.runs.id])
}

output "pipeline_root" {
  description = "Root of the pipeline runs' artifacts (fmnist pipeline compile/submit --pipeline-root; the specs' default)."
  value       = "gs://${google_storage_bucket.pipelines.name}/root"
}
