this is not NetCDF
