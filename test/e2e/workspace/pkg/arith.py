def add_all(values):
    total = 0
    for v in values:
        total = total + v
    return total


def scale(values, factor):
    return [v * factor for v in values]
