package fakemta

import (
	"errors"
	"net/http"
	"strconv"
)

// tenantName reads {name} from the path; on a bad one it has answered 400.
func tenantName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if err := CheckTenantName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return name, true
}

func (a *api) listTenants(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, a.s.Tenants())
}

func (a *api) getTenantPolicy(w http.ResponseWriter, r *http.Request) {
	name, ok := tenantName(w, r)
	if !ok {
		return
	}
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, ok := a.s.TenantPolicy(name)
	if !ok {
		writeError(w, http.StatusNotFound, "no such tenant: "+name)
		return
	}
	writeJSON(w, http.StatusOK, PolicyDocument(p))
}

// putTenantPolicy registers a tenant (201) or swaps its policy (200).
func (a *api) putTenantPolicy(w http.ResponseWriter, r *http.Request) {
	name, ok := tenantName(w, r)
	if !ok {
		return
	}
	q, err := query(r, "connections")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var opts TenantOptions
	if v, ok := q["connections"]; ok {
		if opts.Connections, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, "connections must be true or false, got "+strconv.Quote(v))
			return
		}
	}
	pol, ok := a.readPolicy(w, r)
	if !ok {
		return
	}
	_, existed := a.s.TenantPolicy(name)
	if err := a.s.SetTenant(name, pol, opts); err != nil {
		status := http.StatusInternalServerError // a tenant MX host it cannot listen on
		if errors.Is(err, ErrTenantConflict) {
			status = http.StatusConflict
		}
		writeError(w, status, err.Error())
		return
	}
	status := http.StatusOK
	if !existed {
		status = http.StatusCreated
	}
	writeJSON(w, status, PolicyDocument(pol))
}

func (a *api) deleteTenant(w http.ResponseWriter, r *http.Request) {
	name, ok := tenantName(w, r)
	if !ok {
		return
	}
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !a.s.RemoveTenant(name) {
		writeError(w, http.StatusNotFound, "no such tenant: "+name)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": name, "seq": a.s.Journal().Seq()})
}

func (a *api) wipeTenant(w http.ResponseWriter, r *http.Request) {
	name, ok := tenantName(w, r)
	if !ok {
		return
	}
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := a.s.WipeTenant(name); err != nil {
		writeError(w, http.StatusNotFound, "no such tenant: "+name)
		return
	}
	writeJSON(w, http.StatusOK, resetResult{Wiped: "greylist of tenant " + name, Seq: a.s.Journal().Seq()})
}

func (a *api) tenantGreylist(w http.ResponseWriter, r *http.Request) {
	name, ok := tenantName(w, r)
	if !ok {
		return
	}
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	es, err := a.s.TenantGreylist(name)
	switch {
	case errors.Is(err, ErrNoTenant):
		writeError(w, http.StatusNotFound, "no such tenant: "+name)
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "greylist store: "+err.Error())
		return
	}
	if es == nil {
		es = []GreylistEntry{}
	}
	writeJSON(w, http.StatusOK, es)
}
