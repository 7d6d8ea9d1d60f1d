package lib.cameras_test

import data.lib.cameras
import data.lib.testing as t

watch(id, service, path) := t.exchange(id, service, "GET", path, "operations")

test_watched_district_of_a_district_service if {
	cameras.watched == "q1" with input as watch(t.desk_east, "district-q1.cameras", "/feed/7")
}

test_watched_district_from_the_path if {
	cameras.watched == "thu-duc" with input as watch(t.desk_east, "transport.cameras", "/cameras/thu-duc/feed/3")
	cameras.watched == "q1" with input as watch(t.desk_east, "transport.cameras", "/cameras/q1")
}

test_other_paths_are_the_whole_city if {
	cameras.watched == "*" with input as watch(t.desk_east, "transport.cameras", "/feed/1")
	cameras.watched == "*" with input as watch(t.desk_east, "transport.cameras", "/cameras/")
	cameras.watched == "*" with input as watch(t.desk_east, "transport.cameras", "/cameras")
}

test_services_without_cameras_are_not_watched if {
	not cameras.watched with input as watch(t.desk_east, "cadastre.parcels", "/cameras/q1/feed")
}

test_district_assigned if {
	cameras.district with input as watch(t.desk_east, "district-thu-duc.cameras", "/feed/1")
	cameras.district with input as watch(t.desk_east, "transport.cameras", "/cameras/thu-duc/feed/1")
	cameras.district with input as watch(t.desk_central, "district-q3.cameras", "/")
}

test_center_watches_every_district_and_the_city if {
	cameras.district with input as watch(t.ops, "district-q1.cameras", "/feed/1")
	cameras.district with input as watch(t.ops, "transport.cameras", "/cameras/q3/feed/1")
	cameras.district with input as watch(t.ops, "transport.cameras", "/feed/1")
}

test_district_not_assigned if {
	not cameras.district with input as watch(t.desk_east, "district-q1.cameras", "/feed/1")
	not cameras.district with input as watch(t.desk_east, "transport.cameras", "/cameras/q1/feed/1")
	not cameras.district with input as watch(t.desk_east, "transport.cameras", "/feed/1")
	not cameras.district with input as watch(t.transport, "district-q1.cameras", "/")
	not cameras.district with input as watch(t.forecast, "transport.cameras", "/feed/1")
}

test_district_service_without_district_label if {
	unlabelled := {"classification": "confidential", "labels": {"cameras": "district"}}
	not cameras.district with input as watch(t.desk_east, "district-q1.cameras", "/")
		with data.catalog.services["district-q1.cameras"] as unlabelled
	cameras.district with input as watch(t.ops, "district-q1.cameras", "/")
		with data.catalog.services["district-q1.cameras"] as unlabelled
}

test_unknown_camera_kind_is_watched_only_by_the_whole_city if {
	odd := {"classification": "confidential", "labels": {"cameras": "everywhere"}}
	not cameras.district with input as watch(t.desk_east, "district-q1.cameras", "/")
		with data.catalog.services["district-q1.cameras"] as odd
}

test_other_services_need_no_district if {
	cameras.district with input as watch(t.forecast, "cadastre.parcels", "/cameras/q1")
}

test_denial_names_the_district if {
	ds := cameras.denials with input as watch(t.desk_east, "district-q1.cameras", "/feed/1")
	t.codes(ds) == ["camera_district_not_assigned"]
	some d in ds
	d.rule == "lib.cameras.district"
	d.message == `spiffe://city.example.vn/ops/desk-east watches the cameras of ["thu-duc"], not district q1 (district-q1.cameras)`
}

test_denial_names_the_whole_city if {
	ds := cameras.denials with input as watch(t.desk_east, "transport.cameras", "/events")
	some d in ds
	contains(d.message, "not the whole city")
}

test_denial_for_an_unlabelled_district if {
	ds := cameras.denials with input as watch(t.desk_east, "district-q1.cameras", "/")
		with data.catalog.services["district-q1.cameras"] as {"classification": "confidential", "labels": {"cameras": "district"}}
	some d in ds
	contains(d.message, "not a district the catalog does not name")
}

test_denial_for_an_identity_without_districts if {
	ds := cameras.denials with input as watch(t.transport, "district-q1.cameras", "/")
	some d in ds
	contains(d.message, "the cameras of []")
}

test_no_denial_when_assigned if {
	count(cameras.denials) == 0 with input as watch(t.desk_east, "district-thu-duc.cameras", "/feed/1")
}

test_camera_labels_are_well_formed if {
	every s in data.catalog.services {
		camera_labels(s.labels)
	}
}

camera_labels(labels) if not labels.cameras

camera_labels(labels) if labels.cameras == "district-path"

camera_labels(labels) if {
	labels.cameras == "district"
	labels.district != ""
}
