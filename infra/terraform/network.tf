# Where the Dataflow workers run. They get no public IP unless the subnetwork cannot reach
# Google's APIs without one: private workers reach Cloud Storage and Artifact Registry only
# through Private Google Access on their subnetwork.
#   default                        a network and subnetwork made here, Private Google Access on:
#                                  workers without public IPs
#   var.dataflow_subnetwork = URL  an existing subnetwork (e.g. a Shared VPC's); workers get public
#                                  IPs unless var.dataflow_subnetwork_has_private_google_access
# The deployment outputs dataflow_subnetwork and dataflow_public_ips carry the choice to the jobs.
locals {
  create_dataflow_network = var.dataflow_subnetwork == ""
}

resource "google_compute_network" "dataflow" {
  count                   = local.create_dataflow_network ? 1 : 0
  name                    = "fmnist-dataflow"
  description             = "fmnist Dataflow workers (scoring); no public IPs, Private Google Access on its subnetwork."
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "dataflow" {
  count                    = local.create_dataflow_network ? 1 : 0
  name                     = "fmnist-dataflow"
  region                   = var.region
  network                  = google_compute_network.dataflow[0].id
  ip_cidr_range            = var.dataflow_subnetwork_cidr
  private_ip_google_access = true # what lets workers without public IPs reach Cloud Storage and Artifact Registry

  # Flow logs: who the workers talked to, sampled (a network's audit trail).
  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }

  depends_on = [google_project_service.apis]
}

# Dataflow workers exchange shuffle and streaming data with each other on TCP 12345-12346;
# a new network allows nothing, so this is the one rule they need (workers carry the
# network tag "dataflow").
resource "google_compute_firewall" "dataflow_workers" {
  count       = local.create_dataflow_network ? 1 : 0
  name        = "fmnist-dataflow-workers"
  network     = google_compute_network.dataflow[0].id
  description = "Dataflow workers talk to each other (and nothing else comes in)."
  direction   = "INGRESS"
  priority    = 1000
  source_tags = ["dataflow"]
  target_tags = ["dataflow"]

  allow {
    protocol = "tcp"
    ports    = ["12345-12346"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }

  depends_on = [google_project_service.apis]
}
