"""Savings: money, GPU-hours, energy and CO2 per month between two allocations.

Pure arithmetic on numbers the engine hands over; the assumptions (hours per month, PUE, grid
carbon intensity, how power was obtained) travel with the result so users can check them.
Never does I/O, never reads the clock.
"""
