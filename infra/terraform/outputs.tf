# The deployment: `terraform output -json` of these is the file `fmnist pipeline ... --deployment`
# reads (components/cloud/deployment.py; infra/deployments/example.json shows one). Every name a
# pipeline run uses comes from here; a test checks that each output the code reads is declared.

output "project_id" {
  description = "The project every resource below lives in."
  value       = var.project_id
}

output "region" {
  description = "Region of the buckets, the image repository, Vertex AI Pipelines and the Dataflow jobs."
  value       = var.region
}

output "buckets" {
  description = "Bucket names by purpose."
  value = {
    data      = google_storage_bucket.data.name
    models    = google_storage_bucket.models.name
    tables    = google_storage_bucket.tables.name
    pipelines = google_storage_bucket.pipelines.name
  }
}

output "service_accounts" {
  description = "Emails of the pipeline runner (the runs' account) and the Dataflow worker accounts."
  value = {
    pipeline_runner = google_service_account.pipeline_runner.email
    dataflow_worker = google_service_account.dataflow_worker.email
  }
}

output "image_repository" {
  description = "Where the release pushes the jobs and worker images (make images REGISTRY=...)."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "pipeline_root" {
  description = "Root of the pipeline runs' artifacts (scratch: the pipelines bucket's lifecycle rule empties it)."
  value       = "gs://${google_storage_bucket.pipelines.name}/root"
}

output "model_root" {
  description = "The model registry: version folders and the LATEST pointer (the pipelines' model_root)."
  value       = "gs://${google_storage_bucket.models.name}/models"
}

output "tables_uri" {
  description = "Root of the prediction and error tables and the run summaries (the scoring pipeline's output)."
  value       = "gs://${google_storage_bucket.tables.name}"
}

output "incoming_shards_template" {
  description = "The shards a scheduled scoring run reads, with {date} (the data bucket's incoming/ lifecycle rule keeps them incoming_retention_days)."
  value       = "gs://${google_storage_bucket.data.name}/incoming/{date}/*.tfrecord"
}

output "dataflow_temp_location" {
  description = "Dataflow's temp and staging location (the scoring pipeline's temp_location)."
  value       = "gs://${google_storage_bucket.pipelines.name}/dataflow/temp"
}

output "dataflow_subnetwork" {
  description = "The subnetwork the Dataflow workers run in (Beam's --subnetwork): the one network.tf made, or var.dataflow_subnetwork."
  value       = local.create_dataflow_network ? google_compute_subnetwork.dataflow[0].self_link : var.dataflow_subnetwork
}

output "dataflow_public_ips" {
  description = "Whether the Dataflow workers need public IPs: false only where their subnetwork has Private Google Access."
  value       = local.create_dataflow_network ? false : !var.dataflow_subnetwork_has_private_google_access
}

output "bigquery_views" {
  description = "The views analysts query: predictions, predictions_current, errors, runs."
  value = concat([for view in google_bigquery_table.named_parts : view.id],
  [google_bigquery_table.predictions_current.id, google_bigquery_table.runs.id])
}
