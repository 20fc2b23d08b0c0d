package fakemta

import (
	"errors"
	"net/http"
	"strconv"
)

// tenantRequest reads a request on one tenant: {name} from the path and a
// query string with only the allowed parameters. On a bad name or query it
// has answered 400 and ok is false.
func tenantRequest(w http.ResponseWriter, r *http.Request, allowed ...string) (name string, q map[string]string, ok bool) {
	name = r.PathValue("name")
	if err := CheckTenantName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", nil, false
	}
	q, err := query(r, allowed...)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", nil, false
	}
	return name, q, true
}

// onTenant serves a request on one tenant that takes no query parameters
// (400 for a bad name or query): do's value with 200; 404 when do's error
// is ErrNoTenant; 503 for another error (the greylist store's).
func onTenant(w http.ResponseWriter, r *http.Request, do func(name string) (any, error)) {
	name, _, ok := tenantRequest(w, r)
	if !ok {
		return
	}
	v, err := do(name)
	switch {
	case errors.Is(err, ErrNoTenant):
		writeError(w, http.StatusNotFound, "no such tenant: "+name)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "greylist store: "+err.Error())
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

func (a *api) listTenants(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, a.s.Tenants())
}

func (a *api) getTenantPolicy(w http.ResponseWriter, r *http.Request) {
	onTenant(w, r, func(name string) (any, error) {
		p, ok := a.s.TenantPolicy(name)
		if !ok {
			return nil, ErrNoTenant
		}
		return PolicyDocument(p), nil
	})
}

// putTenantPolicy registers a tenant (201) or swaps its policy (200).
func (a *api) putTenantPolicy(w http.ResponseWriter, r *http.Request) {
	name, q, ok := tenantRequest(w, r, "connections")
	if !ok {
		return
	}
	var opts TenantOptions
	if v, ok := q["connections"]; ok {
		c, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "connections must be true or false, got "+strconv.Quote(v))
			return
		}
		opts.Connections = c
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
	onTenant(w, r, func(name string) (any, error) {
		if !a.s.RemoveTenant(name) {
			return nil, ErrNoTenant
		}
		return map[string]any{"deleted": name, "seq": a.s.Journal().Seq()}, nil
	})
}

func (a *api) wipeTenant(w http.ResponseWriter, r *http.Request) {
	onTenant(w, r, func(name string) (any, error) {
		if err := a.s.WipeTenant(name); err != nil {
			return nil, err
		}
		return resetResult{Wiped: "greylist of tenant " + name, Seq: a.s.Journal().Seq()}, nil
	})
}

func (a *api) tenantGreylist(w http.ResponseWriter, r *http.Request) {
	onTenant(w, r, func(name string) (any, error) {
		es, err := a.s.TenantGreylist(name)
		if err != nil {
			return nil, err
		}
		if es == nil {
			es = []GreylistEntry{}
		}
		return es, nil
	})
}
